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

/// The stream whose partitions are the replay chains of source partitions
/// (partition `<stream>/<partition>` of the source, in its safe form).
pub const REPLAY_STREAM: &str = "dead-letter-replay";

/// The lease a replay holds while it writes (one replay at a time per
/// table: it hands out positions on the replay chains).
pub const REPLAY_LEASE: &str = "dead-letter-replay";

/// Header key of a remainder file: the dead-letter file it is the
/// remainder of.
pub const META_REPLAY_OF: &str = "tributary.replay.of";

/// Header key of a remainder file: the names of the letters of the file it
/// is the remainder of that were decided to become rows
/// (comma-separated, `<position>` or `<position>.<element>`).
pub const META_REPLAY_LETTERS: &str = "tributary.replay.letters";

/// Header key of a remainder file: the first position of the decided range
/// on the source partition's replay chain.
pub const META_REPLAY_FIRST: &str = "tributary.replay.first";

/// Header key of a remainder file: the last position of the decided range.
pub const META_REPLAY_LAST: &str = "tributary.replay.last";

/// Header key of remainder files written before letters had names: the
/// decided letters' indexes in the file (read only to finish such a file).
pub const META_REPLAY_STAGED: &str = "tributary.replay.staged";

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

/// A letter's name within its dead-letter file (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct LetterId {
    position: u64,
    element: Option<u64>,
}

impl LetterId {
    fn of(letter: &StoredLetter) -> Self {
        Self {
            position: letter.position,
            element: letter.element,
        }
    }

    fn parse(text: &str) -> Option<Self> {
        let (position, element) = match text.split_once('.') {
            Some((p, e)) => (p, Some(e.parse().ok()?)),
            None => (text, None),
        };
        Some(Self {
            position: position.parse().ok()?,
            element,
        })
    }
}

impl std::fmt::Display for LetterId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.element {
            Some(element) => write!(f, "{}.{element}", self.position),
            None => write!(f, "{}", self.position),
        }
    }
}

/// What a replay decided for one file, as its remainder's header records
/// it: the letters that become rows and the replay-chain range they take.
#[derive(Debug, Clone, PartialEq)]
struct Decision {
    first: u64,
    last: u64,
    letters: Vec<LetterId>,
}

impl Decision {
    fn metadata(&self) -> [(String, String); 3] {
        let letters: Vec<String> = self.letters.iter().map(LetterId::to_string).collect();
        [
            (META_REPLAY_FIRST.to_string(), self.first.to_string()),
            (META_REPLAY_LAST.to_string(), self.last.to_string()),
            (META_REPLAY_LETTERS.to_string(), letters.join(",")),
        ]
    }
}

/// What a remainder's header says was decided.
enum Decided {
    /// Names and a range (this version).
    Named(Decision),
    /// Indexes into the file, on a chain of the file's own (older
    /// versions).
    Indexed,
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
        let (decided, carries) = self.decision(remainder, path).await?;
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
                chain: chain_id.to_string(),
                reason: letter.reason.clone(),
                error: letter.error.clone(),
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

    /// What an earlier run decided for the file `of`, from the header of
    /// the remainder it wrote, and whether that carries any letter.
    async fn decision(&self, remainder: &Path, of: &Path) -> Result<(Decided, bool)> {
        let bytes = tributary_lake::read_object(self.lake.store().as_ref(), remainder).await?;
        let (_, metadata) = RowFile::read_header(&bytes, remainder.as_ref())?;
        let carries = !read_dead_letters(&bytes, remainder.as_ref())?.is_empty();
        let text = |key: &str| {
            metadata
                .get(key)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        let corrupt = |problem: String| Error::ReplayCorruptRemainder {
            path: remainder.to_string(),
            problem,
        };
        if text(META_REPLAY_OF).as_deref() != Some(of.as_ref()) {
            return Err(corrupt(format!(
                "it is not the replay remainder of {of} (no {META_REPLAY_OF} naming it)"
            )));
        }
        let Some(letters) = text(META_REPLAY_LETTERS) else {
            if text(META_REPLAY_STAGED).is_some() {
                return Ok((Decided::Indexed, carries));
            }
            return Err(corrupt(format!("no {META_REPLAY_LETTERS} in its header")));
        };
        let position = |key: &str| {
            let value = text(key).unwrap_or_default();
            value
                .parse::<u64>()
                .map_err(|_| corrupt(format!("{key} holds `{value}`")))
        };
        let letters = letters
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                LetterId::parse(s)
                    .ok_or_else(|| corrupt(format!("{META_REPLAY_LETTERS} holds `{s}`")))
            })
            .collect::<Result<Vec<_>>>()?;
        let decision = Decision {
            first: position(META_REPLAY_FIRST)?,
            last: position(META_REPLAY_LAST)?,
            letters,
        };
        if decision.letters.len() as u64 > (decision.last + 1).saturating_sub(decision.first) {
            return Err(corrupt(format!(
                "{} letters do not fit its range [{}, {}]",
                decision.letters.len(),
                decision.first,
                decision.last
            )));
        }
        Ok((Decided::Named(decision), carries))
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

/// The letters of `letters` that stay dead letters after `replayed` (whose
/// letters `index_at` maps from their replay-chain position to their index
/// in `letters`): those not selected or not replayable as they were, and
/// those that failed again with their new reason (for a message of which
/// only some elements failed, those elements).
fn remainder_letters(
    letters: &[StoredLetter],
    index_at: &BTreeMap<u64, usize>,
    replayed: &Replayed,
) -> Vec<StoredLetter> {
    let index = |at: &u64| index_at.get(at).copied();
    let tried: BTreeSet<usize> = replayed
        .replayed
        .iter()
        .chain(replayed.failed.iter().map(|(at, _)| at))
        .filter_map(index)
        .collect();
    let mut kept: Vec<(usize, StoredLetter)> = letters
        .iter()
        .enumerate()
        .filter(|(i, _)| !tried.contains(i))
        .map(|(i, l)| (i, l.clone()))
        .chain(
            replayed
                .failed
                .iter()
                .filter_map(|(at, l)| Some((index(at)?, l.clone()))),
        )
        .collect();
    kept.sort_by_key(|(i, l)| (*i, l.element));
    kept.into_iter().map(|(_, l)| l).collect()
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

/// The remainder of dead-letter file `<name>.avro`: `<name>.r1.avro`, and of
/// `<name>.r<n>.avro`, `<name>.r<n+1>.avro`.
fn remainder_path(path: &Path) -> Path {
    let name = path.filename().unwrap_or_default();
    let stem = name.strip_suffix(".avro").unwrap_or(name);
    let next = match stem.rsplit_once(".r") {
        Some((base, n)) if let Ok(n) = n.parse::<u64>() => format!("{base}.r{}", n + 1),
        _ => format!("{stem}.r1"),
    };
    let dir: Vec<_> = path.parts().collect();
    let mut parts = dir[..dir.len().saturating_sub(1)].to_vec();
    parts.push(format!("{next}.avro").into());
    Path::from_iter(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remainders_count_generations() {
        let p = Path::from("_tributary/dead-letter/s/p/00000000000000000007.avro");
        let r1 = remainder_path(&p);
        assert_eq!(
            r1.as_ref(),
            "_tributary/dead-letter/s/p/00000000000000000007.r1.avro"
        );
        assert_eq!(
            remainder_path(&r1).as_ref(),
            "_tributary/dead-letter/s/p/00000000000000000007.r2.avro"
        );
        assert_eq!(source_partition(&p), PartitionId::from_safe_parts("s", "p"));
    }

    fn letter(position: u64, reason: &str) -> StoredLetter {
        StoredLetter {
            position,
            element: None,
            reason: reason.into(),
            error: "e".into(),
            payload: b"x".to_vec(),
            payload_bytes: 1,
            schema_header: None,
            written_at_ms: None,
        }
    }

    #[test]
    fn the_remainder_keeps_what_was_not_replayed_and_new_failures() {
        let letters = vec![
            letter(1, "unknown_schema"),
            letter(2, "unknown_schema"),
            letter(3, "malformed_json"),
            letter(4, "unknown_schema"),
        ];
        let mut failed = letter(2, "decode");
        failed.element = Some(1);
        // Letters 0, 1 and 3 were selected, at 10, 11 and 12 of the chain.
        let index_at = BTreeMap::from([(10, 0), (11, 1), (12, 3)]);
        let replayed = Replayed {
            rows: 2,
            row_file: None,
            replayed: vec![10, 11],
            failed: vec![(11, failed.clone()), (12, letter(4, "decode"))],
        };
        let kept = remainder_letters(&letters, &index_at, &replayed);
        assert_eq!(
            kept,
            vec![failed, letter(3, "malformed_json"), letter(4, "decode")]
        );
    }

    #[test]
    fn letter_names_round_trip() {
        let mut element = letter(7, "flatten");
        element.element = Some(2);
        let names = [LetterId::of(&letter(7, "x")), LetterId::of(&element)];
        let text: Vec<String> = names.iter().map(LetterId::to_string).collect();
        assert_eq!(text, ["7", "7.2"]);
        let parsed: Vec<_> = text.iter().map(|t| LetterId::parse(t)).collect();
        assert_eq!(parsed, names.map(Some));
        assert_eq!(LetterId::parse("7.x"), None);
        assert_eq!(LetterId::parse(""), None);
    }
}

#[cfg(test)]
mod lake_tests {
    use super::*;
    use tributary_lake::dead_letter::{self, DeadLetter, Reason};
    use tributary_lake::rowfile::Codec;

    fn setup(dir: &std::path::Path) -> (Lake, IngestConfig) {
        let text = format!(
            "[lake]\ntable_uri = \"{}\"\n[ingest]\nstream = \"s\"\n[ingest.files]\npath = \"{}\"\n\
             [ingest.flatten]\nexplode = \"messages\"\nkey_field = \"messages_id\"\n",
            dir.join("table").display(),
            dir.join("in").display()
        );
        let config = tributary_config::Config::from_toml_str(&text, std::iter::empty()).unwrap();
        let lake = Lake::open(&config.lake).unwrap();
        (lake, config.ingest.unwrap())
    }

    fn letter(position: u64, payload: &[u8]) -> DeadLetter {
        DeadLetter::new(position, Reason::UnknownSchema, "before", payload, 1 << 20)
    }

    /// Stages a row file for `p` covering `[first, last]` (the batch's
    /// commit point).
    async fn commit_batch(lake: &Lake, p: &PartitionId, first: u64, last: u64) {
        let batch = deltalake::arrow::record_batch::RecordBatch::try_from_iter([(
            "_position",
            std::sync::Arc::new(deltalake::arrow::array::Int64Array::from(vec![
                first as i64,
            ])) as deltalake::arrow::array::ArrayRef,
        )])
        .unwrap();
        let file = tributary_lake::rowfile::write(
            &batch,
            Codec::Zstd,
            chain::file_metadata(p, first, last),
        )
        .unwrap();
        chain::stage(lake.store().as_ref(), p, first, file)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn letters_of_uncommitted_batches_wait_and_a_decided_file_stages_what_was_decided() {
        let dir = tempfile::tempdir().unwrap();
        let (lake, config) = setup(dir.path());
        let store = lake.store().as_ref();
        let p = PartitionId::new("s", "p");
        let good = br#"{"messages":[{"id":"k1"},{"id":"k2"}]}"#;
        let letters = [letter(3, good), letter(7, b"{bad"), letter(9, good)];
        let file = dead_letter::encode(&p, 0, 10, &letters, Codec::Zstd).unwrap();
        chain::stage_dead_letters(store, &p, 0, 10, file)
            .await
            .unwrap();
        let everything = Selection::default();

        // Ingest has not staged the batch: it may still stage these itself.
        let report = replay(&lake, &config, &everything, false).await.unwrap();
        assert_eq!(report.files_not_committed, 1);
        assert_eq!(report.replayed, 0);

        // Committed; a stopped run had decided that only letter 0 becomes
        // rows (letter 2 was not selected then) and wrote the remainder.
        commit_batch(&lake, &p, 0, 10).await;
        let path = p.dead_letter_file(0);
        let remainder = remainder_path(&path);
        let kept: Vec<StoredLetter> = letters[1..].iter().map(StoredLetter::from).collect();
        let decision = Decision {
            first: 0,
            last: 0,
            letters: vec![LetterId {
                position: 3,
                element: None,
            }],
        };
        let metadata = [
            (META_REPLAY_OF.to_string(), path.to_string()),
            (chain::META_LAST_POSITION.to_string(), "9".to_string()),
        ]
        .into_iter()
        .chain(decision.metadata());
        let body = encode_stored(&kept, Codec::Zstd, metadata).unwrap();
        store.put(&remainder, body.into()).await.unwrap();

        let report = replay(&lake, &config, &everything, false).await.unwrap();
        assert_eq!((report.replayed, report.staged_rows), (1, 2), "{report:?}");
        assert_eq!((report.files_retired, report.remainders_waiting), (1, 1));
        assert!(store.head(&path).await.is_err(), "the file is retired");
        let staged = chain::staged_partitions(store).await.unwrap();
        let replay_chain: Vec<_> = staged
            .iter()
            .filter(|id| id.stream() == REPLAY_STREAM)
            .collect();
        assert_eq!(replay_chain.len(), 1);

        // The next run replays the remainder: letter 2 becomes rows, the
        // bad one stays with its new reason.
        let report = replay(&lake, &config, &everything, false).await.unwrap();
        assert_eq!((report.replayed, report.staged_rows), (1, 2), "{report:?}");
        assert_eq!(
            report.still_failing,
            BTreeMap::from([("malformed_json".to_string(), 1)])
        );
        let left: Vec<_> = dead_letter_files(&lake)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.location.filename().unwrap_or_default().to_string())
            .collect();
        assert_eq!(left, vec!["00000000000000000000.r2.avro".to_string()]);
        // A third run changes nothing.
        let report = replay(&lake, &config, &everything, false).await.unwrap();
        assert_eq!(
            (
                report.replayed,
                report.remainder_files,
                report.files_retired
            ),
            (0, 0, 0)
        );
    }

    /// The `_key`s of the rows staged on `p`'s replay chain, by the first
    /// position of their file.
    async fn replayed_keys(lake: &Lake, p: &PartitionId) -> Vec<(u64, Vec<String>)> {
        use deltalake::arrow::array::AsArray;
        let store = lake.store().as_ref();
        let mut keys = Vec::new();
        for file in chain::staged_files(store, &replay_chain(p)).await.unwrap() {
            let bytes = tributary_lake::read_object(store, &file.path)
                .await
                .unwrap();
            let rows = RowFile::read(&bytes, "staged").unwrap().batch;
            let column = rows.column_by_name("_key").unwrap().as_string::<i32>();
            let file_keys = column.iter().map(|k| k.unwrap().to_string()).collect();
            keys.push((file.first, file_keys));
        }
        keys
    }

    /// The compactor's config for the lake of [`setup`], with `extra`.
    fn compact_config(dir: &std::path::Path, extra: &str) -> tributary_config::CompactConfig {
        let text = format!(
            "[lake]\ntable_uri = \"{}\"\n{extra}",
            dir.join("table").display()
        );
        tributary_config::Config::from_toml_str(&text, std::iter::empty())
            .unwrap()
            .compact
    }

    fn envelope(id: &str) -> Vec<u8> {
        format!(r#"{{"messages":[{{"id":"{id}"}}]}}"#).into_bytes()
    }

    fn stored(position: u64, reason: &str, payload: &[u8], written_at_ms: i64) -> StoredLetter {
        StoredLetter {
            position,
            element: None,
            reason: reason.into(),
            error: "before".into(),
            payload: payload.to_vec(),
            payload_bytes: payload.len() as u64,
            schema_header: None,
            written_at_ms: Some(written_at_ms),
        }
    }

    /// Starts a replay that waits after `step` of its first file and stops
    /// it there once `written` exists (as a `kill -9` would).
    async fn replay_stopped_after(
        lake: &Lake,
        config: &IngestConfig,
        selection: &Selection,
        step: &str,
        written: &Path,
    ) {
        let task = tokio::spawn({
            let (lake, config, selection) = (lake.clone(), config.clone(), selection.clone());
            let pause = Some((step.to_string(), 1));
            async move { replay_pausing(&lake, &config, &selection, false, pause).await }
        });
        for _ in 0..600 {
            if lake.store().head(written).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!task.is_finished(), "the replay ended instead of pausing");
        task.abort();
        assert!(
            lake.store().head(written).await.is_ok(),
            "{written} never appeared"
        );
    }

    /// Regression (issue 17 review): a replay stopped after writing its
    /// remainder named the letters to stage by index; retention dropping
    /// letters of the file before the rerun shifted those indexes, and the
    /// rerun staged the wrong letters and lost one. The rerun must stage
    /// exactly the decided letters the file still holds.
    #[tokio::test]
    async fn a_rerun_after_retention_rewrote_the_file_stages_exactly_the_decided_letters_left() {
        let dir = tempfile::tempdir().unwrap();
        let (lake, config) = setup(dir.path());
        let store = lake.store().as_ref();
        let p = PartitionId::new("s", "p");
        let now = chrono::Utc::now().timestamp_millis();
        let old = now - 40 * 86_400_000;
        // Two letters not selected (one past the retention age), three
        // selected, the last of them past the retention age.
        let letters = [
            stored(1, "malformed_json", b"{bad", old),
            stored(2, "malformed_json", b"{bad", now),
            stored(3, "unknown_schema", &envelope("k3"), now),
            stored(5, "unknown_schema", &envelope("k5"), now),
            stored(7, "unknown_schema", &envelope("k7"), old),
        ];
        let file = encode_stored(&letters, Codec::Zstd, chain::file_metadata(&p, 0, 10)).unwrap();
        chain::stage_dead_letters(store, &p, 0, 10, file)
            .await
            .unwrap();
        commit_batch(&lake, &p, 0, 10).await;
        let path = p.dead_letter_file(0);
        let remainder = remainder_path(&path);
        let unknown = Selection {
            reason: Some("unknown_schema".into()),
            ..Default::default()
        };
        replay_stopped_after(&lake, &config, &unknown, "decided", &remainder).await;
        assert!(
            replayed_keys(&lake, &p).await.is_empty(),
            "nothing staged yet"
        );

        // Retention drops the letters past 30 days from the file and its
        // remainder.
        let compact = compact_config(dir.path(), "[retention]\nmax_age_days = 30\n");
        let options = crate::retention::RetentionOptions::new(&compact, false);
        let expired = crate::retention::retention(&compact, &lake, &options)
            .await
            .unwrap();
        // Letters 1 and 7 of the file, letter 1 of the remainder.
        assert_eq!(expired.row_files.dead_letters_expired, 3, "{expired:?}");

        let report = replay(&lake, &config, &unknown, false).await.unwrap();
        assert_eq!((report.replayed, report.staged_rows), (2, 2), "{report:?}");
        assert_eq!(report.decided_letters_gone, 1, "{report:?}");
        assert_eq!(report.files_retired, 1, "{report:?}");
        let keys = vec!["k3".to_string(), "k5".to_string()];
        assert_eq!(replayed_keys(&lake, &p).await, vec![(0, keys)]);
        let left = read_dead_letters(
            &tributary_lake::read_object(store, &remainder)
                .await
                .unwrap(),
            "r",
        )
        .unwrap();
        assert_eq!(
            left,
            letters[1..2].to_vec(),
            "the remainder keeps the letter not selected"
        );
        assert!(store.head(&path).await.is_err(), "the file is retired");
    }

    /// Every replay of a source partition's letters, file after file and
    /// run after run, stages on the one replay chain of that partition, at
    /// the next free positions: the table gets one `txn` entry for it, not
    /// one per replayed file. A replay stopped after staging, compacted,
    /// then run again, finds its range committed and stages nothing again.
    #[tokio::test]
    async fn replays_of_a_partition_share_one_chain_through_stops_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let (lake, config) = setup(dir.path());
        let store = lake.store().as_ref();
        let p = PartitionId::new("s", "p");
        let now = chrono::Utc::now().timestamp_millis();
        for (first, ids) in [(0, ["a0", "a1"]), (10, ["b0", "b1"])] {
            let letters: Vec<_> = (first..)
                .zip(ids)
                .map(|(at, id)| stored(at, "unknown_schema", &envelope(id), now))
                .collect();
            let file = encode_stored(
                &letters,
                Codec::Zstd,
                chain::file_metadata(&p, first, first + 9),
            )
            .unwrap();
            chain::stage_dead_letters(store, &p, first, first + 9, file)
                .await
                .unwrap();
        }
        // The source's batch [0, 19], with a real row, so that the compactor
        // commits it.
        let settings = BatchSettings::from_config(&config);
        let source_row = [(0, stored(0, "none", &envelope("src"), now))];
        let mut types = ColumnTypes::default();
        let batch = replay_letters(
            &p,
            &p,
            (0, 19),
            &settings,
            &Schemas::default(),
            &mut types,
            &source_row,
        )
        .unwrap();
        let file = batch.row_file.unwrap();
        chain::stage(store, &p, 0, file).await.unwrap();
        let everything = Selection::default();
        // The first file's replay stops once staged; the compactor commits
        // it (the replay chain's watermark is 1; the staged file is gone).
        let staged = replay_chain(&p).staged_file(0);
        replay_stopped_after(&lake, &config, &everything, "staged", &staged).await;
        let compact = compact_config(dir.path(), "");
        let metrics = crate::compact::compact_until_empty(&compact, &lake)
            .await
            .unwrap();
        assert!(store.head(&staged).await.is_err(), "compacted: {metrics:?}");

        let report = replay(&lake, &config, &everything, false).await.unwrap();
        assert_eq!(report.files_already_staged, 1, "{report:?}");
        assert_eq!(
            (report.replayed, report.files_retired),
            (2, 2),
            "{report:?}"
        );
        // The second file's rows go after the committed range.
        let keys = vec!["b0".to_string(), "b1".to_string()];
        assert_eq!(replayed_keys(&lake, &p).await, vec![(2, keys)]);
        let staged = chain::staged_partitions(store).await.unwrap();
        let chains: Vec<_> = staged
            .iter()
            .filter(|id| id.stream() == REPLAY_STREAM)
            .collect();
        assert_eq!(chains, vec![&replay_chain(&p)]);
        assert!(dead_letter_files(&lake).await.unwrap().is_empty());
    }
}
