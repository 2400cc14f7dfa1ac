//! `tributary dead-letters replay`: selected dead letters run through the
//! current decoder and flattener into the table's staging, exactly once,
//! and are then retired.
//!
//! # Why a chain of its own
//!
//! The table's exactly-once protocol (DESIGN.md, `tributary_lake::chain`)
//! already answers "was this staged?" for any `<stream>/<partition>`: a
//! staged row file is created once at a name derived from its first
//! position, and once compacted the table's Delta `txn` watermark for the
//! partition says so, and the compactor drops every later row at or below
//! it. Replay reuses it instead of keeping a ledger of its own: each
//! dead-letter file `F` (`_tributary/dead-letter/<stream>/<partition>/<name>.avro`)
//! is a source partition of the stream [`REPLAY_STREAM`], named after `F`'s
//! path and the last source position its header covers, whose positions
//! are the indexes of `F`'s entries. All of `F`'s
//! replayed rows go into *one* row file covering `[0, len(F) - 1]` (a
//! dead-letter file holds at most one ingest batch, so this is bounded), so
//! the chain tells with one look whether `F` was replayed: its row file
//! exists, or the watermark exists. A second copy of that file (two replays
//! at once, or one that staged again after the compactor deleted the first)
//! has every row at or below the watermark, and the compactor drops it.
//! The rows keep their `_key`; only `_position` is the chain's.
//!
//! Only files of committed batches are replayed: ingest writes a batch's
//! dead letters *before* its row file (the commit point), so until the
//! source partition's chain is staged past the file's last position, ingest
//! may read the batch again (after a crash) and stage those messages
//! itself. Such files are left for a later run (`files_not_committed`).
//!
//! # Steps for one file
//!
//! ```text
//!   read F; select letters (reason, partition, age; whole payloads only)
//!        │ none selected ──► leave F alone
//!        ▼
//!   replay chain of F staged or committed? ── yes ─────────────────┐
//!        │ no                                                      │
//!        ▼                                                         │
//!   remainder R = F.r<n+1>.avro exists? ── yes: its header names   │
//!        │ no                          the indexes to stage ─┐     │
//!        ▼                                                   │     │
//!   decode the selected letters                              │     │
//!   (no rows and no new reason ──► leave F alone)            │     │
//!        ▼                                                   │     │
//!   put R create-only: every letter not replayed, the ones   │     │
//!   that failed again with their new reason; header: the    │     │
//!   indexes that become rows (the decision)                  │     │
//!        ▼                                   ◄───────────────┘     │
//!   stage the row file of those indexes on F's chain (create-only) │
//!        ▼                                   ◄─────────────────────┘
//!   delete F (retired)
//! ```
//!
//! A `kill -9` anywhere leaves one of: nothing written (the rerun starts
//! over); R written, nothing staged (the rerun stages what R's header
//! names, never more); the row file staged or compacted (the rerun only
//! deletes F); F deleted (nothing left to do). No letter is staged twice
//! (the chain), and none is lost: a letter is either a row (staged before F
//! is deleted) or in R (written before anything is staged). Retiring is
//! deleting F, which is idempotent. Letters that fail again are never
//! dropped: they are in R with their new reason, and R is an ordinary
//! dead-letter file (listed, shown, erased by `forget`, replayable later on
//! a chain of its own, as it has another name).
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

use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::Serialize;
use tributary_config::IngestConfig;
use tributary_ingest::batch::{BatchSettings, ColumnTypes};
use tributary_ingest::replay::{Replayed, message_of, replay_letters};
use tributary_ingest::schemas::{self, Schemas};
use tributary_lake::dead_letter::{StoredLetter, encode_stored, read_dead_letters};
use tributary_lake::rowfile::RowFile;
use tributary_lake::{Lake, PartitionId, chain, columns};

use super::{Selection, dead_letter_files, partition_of};
use crate::error::{Error, Result};
use crate::progress::Progress;

/// The stream whose partitions are replayed dead-letter files.
pub const REPLAY_STREAM: &str = "dead-letter-replay";

/// Header key of a remainder file: the dead-letter file it is the
/// remainder of.
pub const META_REPLAY_OF: &str = "tributary.replay.of";

/// Header key of a remainder file: the indexes (comma-separated) of the
/// letters of the file it is the remainder of that were decided to become
/// rows.
pub const META_REPLAY_STAGED: &str = "tributary.replay.staged";

/// For the crash tests: `<step>:<n>` (`decided` or `staged`) makes a replay
/// wait to be killed after that step of the `n`th file it works on.
pub const PAUSE_AFTER_VARIABLE: &str = "TRIBUTARY_REPLAY_PAUSE_AFTER";

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
}

/// Replays the dead letters `selection` picks with `config`'s decoder,
/// registry and flattening into `lake`'s staging (see the module docs).
pub async fn replay(
    lake: &Lake,
    config: &IngestConfig,
    selection: &Selection,
    dry_run: bool,
) -> Result<ReplayReport> {
    let mut replayer = Replayer::new(lake, config, dry_run).await?;
    let files = dead_letter_files(lake).await?;
    let listed: BTreeSet<Path> = files.iter().map(|m| m.location.clone()).collect();
    let mut progress = Progress::new("dead-letter files replayed", files.len() as u64);
    for meta in files {
        let partition = partition_of(&meta.location);
        let remainder = remainder_path(&meta.location);
        if listed.contains(&remainder) {
            // A replay stopped after it decided this file: finish it,
            // whatever the selection is now.
            replayer
                .file(&meta.location, &remainder, None, &listed)
                .await?;
        } else if selection.file(&partition, &meta) {
            replayer
                .file(&meta.location, &remainder, Some(selection), &listed)
                .await?;
        }
        progress.step();
    }
    Ok(replayer.report)
}

struct Replayer<'a> {
    lake: &'a Lake,
    settings: BatchSettings,
    registry: Option<tributary_schema_registry::client::Client>,
    types: ColumnTypes,
    table: Option<deltalake::DeltaTable>,
    report: ReplayReport,
    pause_after: Option<(String, u64)>,
    /// Files worked on (selected letters, not already staged).
    worked: u64,
    /// Where each source partition's chain is committed up to (resume
    /// point: staged or in the table), as read once per run.
    committed: HashMap<PartitionId, Option<u64>>,
}

impl<'a> Replayer<'a> {
    async fn new(lake: &'a Lake, config: &IngestConfig, dry_run: bool) -> Result<Self> {
        let table = lake.load_table().await?;
        let mut types = ColumnTypes::from_config(&config.flatten);
        if let Some(table) = &table {
            for (name, ty) in columns::table_columns(table)? {
                types.fix_table_column(&name, ty);
            }
        }
        let pause_after = std::env::var(PAUSE_AFTER_VARIABLE).ok().and_then(|v| {
            let (step, n) = v.split_once(':')?;
            Some((step.to_string(), n.parse().ok()?))
        });
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
            pause_after,
            worked: 0,
            committed: HashMap::new(),
        })
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
        let bytes = match tributary_lake::read_object(self.lake.store().as_ref(), path).await {
            Ok(bytes) => bytes,
            // Retired by another replay since the listing.
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let (_, metadata) = RowFile::read_header(&bytes, path.as_ref())?;
        if let Some(origin) = metadata.get(META_REPLAY_OF)
            && listed.contains(&Path::from(String::from_utf8_lossy(origin).as_ref()))
        {
            // The remainder of a file a stopped replay has not retired yet:
            // its letters may still become rows from there (this run
            // finishes that file first); replay this one next time.
            self.report.remainders_waiting += 1;
            return Ok(());
        }
        let extent = chain::last_position(&metadata, path.as_ref())?;
        if !metadata.contains_key(META_REPLAY_OF) && !self.batch_committed(&source, extent).await? {
            // Ingest writes a batch's dead letters before its row file, the
            // commit point: until that is staged, ingest may read the batch
            // again and stage these messages itself.
            self.report.files_not_committed += 1;
            return Ok(());
        }
        let letters = read_dead_letters(&bytes, path.as_ref())?;
        self.report.files_read += 1;
        // The extent is in the name so that a file written again at the
        // same path for another extent has another chain.
        let chain_id = PartitionId::new(REPLAY_STREAM, &format!("{source}/{name}/{extent}"));
        let last = (letters.len() as u64).saturating_sub(1);
        let Some(selection) = selection else {
            return self
                .resume(path, remainder, &source, &chain_id, last, &letters)
                .await;
        };
        let mut selected = Vec::new();
        for (index, letter) in letters.iter().enumerate() {
            if !selection.reason(&letter.reason) {
                continue;
            }
            self.report.letters_selected += 1;
            if letter.is_whole() {
                selected.push((index as u64, letter.clone()));
            } else {
                self.report.not_replayable += 1;
            }
        }
        if selected.is_empty() {
            return Ok(());
        }
        if self.staged(&chain_id).await? {
            self.report.files_already_staged += 1;
            return self.retire(path).await;
        }
        self.worked += 1;
        let replayed = self.decode(&source, &chain_id, last, &selected).await?;
        self.count(&replayed);
        let unchanged = replayed.replayed.is_empty()
            && replayed.failed.iter().all(|(index, new)| {
                letters.get(*index as usize).is_some_and(|old| {
                    (&old.reason, &old.error, old.element) == (&new.reason, &new.error, new.element)
                })
            });
        if unchanged || self.report.dry_run {
            return Ok(());
        }
        let carried = remainder_letters(&letters, &replayed);
        if !carried.is_empty() {
            self.write_remainder(path, remainder, &carried, &replayed.replayed)
                .await?;
        }
        self.pause("decided").await;
        self.stage(&chain_id, &replayed).await?;
        self.pause("staged").await;
        self.retire(path).await
    }

    /// Finishes the replay of the file at `path` that an earlier run
    /// decided (it wrote `remainder`) and was stopped before retiring:
    /// stages exactly the letters that run decided become rows, unless they
    /// are staged already, and retires the file.
    async fn resume(
        &mut self,
        path: &Path,
        remainder: &Path,
        source: &PartitionId,
        chain_id: &PartitionId,
        last: u64,
        letters: &[StoredLetter],
    ) -> Result<()> {
        if self.staged(chain_id).await? {
            self.report.files_already_staged += 1;
            return self.retire(path).await;
        }
        let decided = self.decision(remainder, path).await?;
        self.worked += 1;
        // Letters blanked by an erasure since are left out: erased.
        let chosen: Vec<_> = letters
            .iter()
            .enumerate()
            .map(|(i, l)| (i as u64, l))
            .filter(|(i, l)| decided.contains(i) && l.is_whole())
            .map(|(i, l)| (i, l.clone()))
            .collect();
        let replayed = self.decode(source, chain_id, last, &chosen).await?;
        if let Some((index, letter)) = replayed
            .failed
            .iter()
            .find(|(index, _)| !replayed.replayed.contains(index))
        {
            return Err(Error::Replay {
                path: path.to_string(),
                reason: format!(
                    "the remainder {remainder} decided that letter {index} becomes rows, \
                     but it now fails ({}: {}); the file is left as it is",
                    letter.reason, letter.error
                ),
            });
        }
        self.count(&replayed);
        if self.report.dry_run {
            return Ok(());
        }
        self.stage(chain_id, &replayed).await?;
        self.pause("staged").await;
        self.retire(path).await
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

    /// Whether `chain_id`'s row file is staged or committed.
    async fn staged(&self, chain_id: &PartitionId) -> Result<bool> {
        if self
            .lake
            .watermark(self.table.as_ref(), chain_id)
            .await?
            .is_some()
        {
            return Ok(true);
        }
        let file = chain_id.staged_file(0);
        match self.lake.store().head(&file).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(tributary_lake::Error::store(&file, e).into()),
        }
    }

    /// The indexes an earlier run decided to stage, from the header of the
    /// remainder it wrote, if it wrote one.
    async fn decision(&self, remainder: &Path, of: &Path) -> Result<BTreeSet<u64>> {
        let bytes = tributary_lake::read_object(self.lake.store().as_ref(), remainder).await?;
        let (_, metadata) = RowFile::read_header(&bytes, remainder.as_ref())?;
        let text = |key: &str| {
            metadata
                .get(key)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        let corrupt = |reason: String| Error::Replay {
            path: remainder.to_string(),
            reason,
        };
        if text(META_REPLAY_OF).as_deref() != Some(of.as_ref()) {
            return Err(corrupt(format!(
                "it is not the replay remainder of {of} (no {META_REPLAY_OF} naming it)"
            )));
        }
        let staged = text(META_REPLAY_STAGED).unwrap_or_default();
        staged
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse()
                    .map_err(|_| corrupt(format!("{META_REPLAY_STAGED} holds `{s}`")))
            })
            .collect()
    }

    /// Resolves the letters' schemas (waiting out a registry outage, as
    /// ingest does) and decodes them off the reactor.
    async fn decode(
        &mut self,
        source: &PartitionId,
        chain_id: &PartitionId,
        last: u64,
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
                &source, &chain_id, last, &settings, &schemas, &mut types, &letters,
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

    async fn write_remainder(
        &mut self,
        of: &Path,
        remainder: &Path,
        letters: &[StoredLetter],
        staged: &[u64],
    ) -> Result<()> {
        let first = letters.iter().map(|l| l.position).min().unwrap_or(0);
        let last = letters.iter().map(|l| l.position).max().unwrap_or(0);
        let source = source_partition(of).unwrap_or_else(|| PartitionId::new("unknown", "unknown"));
        let staged: Vec<String> = staged.iter().map(u64::to_string).collect();
        let metadata = chain::file_metadata(&source, first, last)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .chain([
                (META_REPLAY_OF.to_string(), of.to_string()),
                (META_REPLAY_STAGED.to_string(), staged.join(",")),
            ]);
        let body = encode_stored(letters, self.settings.codec, metadata)?;
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
            Err(object_store::Error::AlreadyExists { .. }) => Err(Error::Replay {
                path: of.to_string(),
                reason: format!(
                    "{remainder} appeared while this replay decoded the file: another replay \
                     is running; run again once it is done"
                ),
            }),
            Err(e) => Err(tributary_lake::Error::store(remainder, e).into()),
        }
    }

    async fn stage(&mut self, chain_id: &PartitionId, replayed: &Replayed) -> Result<()> {
        if let Some(file) = &replayed.row_file {
            // Already staged (a concurrent replay): the chain keeps one.
            chain::stage(self.lake.store().as_ref(), chain_id, 0, file.clone()).await?;
        }
        Ok(())
    }

    async fn retire(&mut self, path: &Path) -> Result<()> {
        if self.report.dry_run {
            return Ok(());
        }
        match self.lake.store().delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                self.report.files_retired += 1;
                Ok(())
            }
            Err(e) => Err(tributary_lake::Error::store(path, e).into()),
        }
    }
}

/// The letters of `letters` that stay dead letters after `replayed`: those
/// not selected or not replayable as they were, and those that failed
/// again with their new reason (for a message of which only some elements
/// failed, those elements).
fn remainder_letters(letters: &[StoredLetter], replayed: &Replayed) -> Vec<StoredLetter> {
    let tried: BTreeSet<u64> = replayed
        .replayed
        .iter()
        .copied()
        .chain(replayed.failed.iter().map(|(i, _)| *i))
        .collect();
    let mut kept: Vec<(u64, StoredLetter)> = letters
        .iter()
        .enumerate()
        .map(|(i, l)| (i as u64, l))
        .filter(|(i, _)| !tried.contains(i))
        .map(|(i, l)| (i, l.clone()))
        .chain(replayed.failed.iter().cloned())
        .collect();
    kept.sort_by_key(|(i, l)| (*i, l.element));
    kept.into_iter().map(|(_, l)| l).collect()
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
        let replayed = Replayed {
            rows: 2,
            row_file: None,
            replayed: vec![0, 1],
            failed: vec![(1, failed.clone()), (3, letter(4, "decode"))],
        };
        let kept = remainder_letters(&letters, &replayed);
        assert_eq!(
            kept,
            vec![failed, letter(3, "malformed_json"), letter(4, "decode")]
        );
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
        let metadata = [
            (META_REPLAY_OF.to_string(), path.to_string()),
            (META_REPLAY_STAGED.to_string(), "0".to_string()),
            (chain::META_LAST_POSITION.to_string(), "9".to_string()),
        ];
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
}
