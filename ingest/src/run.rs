//! The ingest run loop: discover partitions, resume each from the lake, read
//! batches, encode them off the reactor, stage them on the chain.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use object_store::ObjectStoreExt;
use tokio::sync::watch;
use tributary_config::{FilesSourceConfig, IngestConfig, Source};
use tributary_lake::chain::{self, StageOutcome};
use tributary_lake::{Lake, PartitionId};

use crate::batch::{ColumnTypes, EncodedBatch, SourceItem, encode_batch_with_source};
use crate::error::{Error, Result};
use crate::fanout::{Destination, Resumes};
use crate::schemas::Schemas;
use crate::source::{FilePartition, ReadLimits, StdinPartition, list_files};
use crate::tables::{Table, Tables};
use crate::telemetry::IngestTelemetry;
use tributary_lake::dead_letter::{self, DeadLetter, Reason};
use tributary_schema_registry::client::describe;

/// Whether ingest follows its sources or stops once they are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Keep watching for new data until shut down.
    Follow,
    /// Read what is there now, stage it, stop: every file counts as
    /// complete; a Kafka partition is read up to its end offset when it is
    /// assigned; a Kinesis shard until it is caught up.
    Once,
}

/// What every partition worker shares: the tables batches are staged into,
/// how they are encoded and staged, and where partitions resume. Sources
/// other than files use it through [`Stager::stage`] and
/// [`Stager::resume_all`].
pub(crate) struct Stager {
    pub(crate) tables: Tables,
    pub(crate) telemetry: IngestTelemetry,
}

impl Stager {
    /// Where each of `ids` (partitions feeding `table`) resumes (DESIGN.md,
    /// "Exactly-once into the table"): after the greater of the table's
    /// watermark, read now (one table load for all), and the newest staged
    /// file's last position; `None` means from the start.
    pub(crate) async fn resume_all(
        &self,
        table: &Table,
        ids: &[PartitionId],
    ) -> Result<Vec<Option<u64>>> {
        let lake = &table.lake;
        let delta = lake.load_table().await?;
        let store = lake.store().as_ref();
        futures::future::try_join_all(ids.iter().map(|id| async {
            let watermark = lake.watermark(delta.as_ref(), id).await?;
            Ok(chain::resume_after(store, id, watermark).await?)
        }))
        .await
    }

    /// Encodes `items` (read from `id` since `started`) off the reactor and
    /// stages them into `table`: dead letters first, then the row file (the
    /// commit point).
    pub(crate) async fn stage(
        &self,
        table: &Table,
        id: &PartitionId,
        types: ColumnTypes,
        items: Vec<SourceItem>,
        started: Instant,
    ) -> Result<(ColumnTypes, StageOutcome)> {
        self.stage_with_source(table, id, types, items, started, Vec::new())
            .await
    }

    /// [`stage`](Self::stage), with the source's own positions of the batch
    /// in the row file's metadata (see [`crate::batch::encode_batch_with_source`]).
    pub(crate) async fn stage_with_source(
        &self,
        table: &Table,
        id: &PartitionId,
        types: ColumnTypes,
        items: Vec<SourceItem>,
        started: Instant,
        source: Vec<(String, String)>,
    ) -> Result<(ColumnTypes, StageOutcome)> {
        let schemas = self.schemas(table, id, &items).await;
        let settings = table.settings.clone();
        let task_id = id.clone();
        let (types, batch) = blocking(id.clone(), move || {
            let mut types = types;
            let batch =
                encode_batch_with_source(&task_id, &settings, &schemas, &mut types, items, source);
            (types, batch)
        })
        .await?;
        let outcome = self.put(table, id, &batch?, started).await?;
        Ok((types, outcome))
    }

    /// The schemas `items` name, from `table`'s registry (waiting while it
    /// is unavailable).
    pub(crate) async fn schemas(
        &self,
        table: &Table,
        id: &PartitionId,
        items: &[SourceItem],
    ) -> Schemas {
        let registry = table.registry.as_deref();
        Schemas::resolve(registry, items, |reference, error, wait| {
            self.telemetry.registry_unavailable();
            tracing::warn!(
                partition = %id,
                schema = %describe(reference),
                %error,
                retry_in_ms = wait.as_millis() as u64,
                "waiting for the schema registry"
            );
        })
        .await
    }

    /// Stages an encoded `batch` of `id` into `table`: its dead letters
    /// first, then its row file (the commit point).
    pub(crate) async fn put(
        &self,
        table: &Table,
        id: &PartitionId,
        batch: &EncodedBatch,
        started: Instant,
    ) -> Result<StageOutcome> {
        let store = table.lake.store();
        if let Some(file) = &batch.dead_letter_file {
            chain::stage_dead_letters(store.as_ref(), id, batch.first, batch.last, file.clone())
                .await?;
        }
        let outcome = chain::stage(store.as_ref(), id, batch.first, batch.row_file.clone()).await?;
        match outcome {
            StageOutcome::Staged => {
                self.telemetry
                    .batch_staged(&table.id, id, batch, started.elapsed())
            }
            StageOutcome::AlreadyStaged { existing_last } => {
                self.telemetry
                    .batch_dropped(&table.id, id, batch, existing_last)
            }
        }
        Ok(outcome)
    }
}

/// Runs ingest for `config` into `lake` until the sources are read (`Mode::Once`)
/// or `shutdown` turns true. Metrics go to `telemetry`.
///
/// On shutdown it stops reading, stages the batch each partition is working
/// on, and returns; nothing read is left unstaged.
pub async fn run(
    config: &IngestConfig,
    lake: &Lake,
    mode: Mode,
    shutdown: watch::Receiver<bool>,
    telemetry: IngestTelemetry,
) -> Result<()> {
    run_tables(
        config,
        Tables::single(config, lake),
        mode,
        shutdown,
        telemetry,
    )
    .await
}

/// [`run()`](fn@run) into `tables`: the one table of an unrouted
/// configuration, or a table per Kafka topic (`[ingest.routing]`, see
/// [`Tables::new`]).
pub async fn run_tables(
    config: &IngestConfig,
    tables: Tables,
    mode: Mode,
    shutdown: watch::Receiver<bool>,
    telemetry: IngestTelemetry,
) -> Result<()> {
    let stager = Stager { tables, telemetry };
    match config.source()? {
        Source::Files(files) => run_files(config, files, &stager, mode, shutdown).await,
        Source::Kafka(kafka) => {
            crate::source::kafka::run(config, kafka, stager, mode, shutdown).await
        }
        Source::Kinesis(kinesis) => {
            crate::source::kinesis::run(config, kinesis, &stager, mode, shutdown).await
        }
    }
}

/// The files source: a directory of files (one partition each) or stdin.
async fn run_files(
    config: &IngestConfig,
    files: &FilesSourceConfig,
    stager: &Stager,
    mode: Mode,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let limits = ReadLimits {
        max_records: config.batch.max_records,
        max_bytes: config.batch.max_bytes,
        max_latency: Duration::from_millis(config.batch.max_latency_ms),
        max_message_bytes: config.max_message_bytes,
        dead_letter_max_payload_bytes: config.dead_letter_max_payload_bytes,
        settle: match mode {
            Mode::Once => Duration::ZERO,
            Mode::Follow => Duration::from_millis(files.gz_settle_ms),
        },
        format: files.format,
    };
    let poll = Duration::from_millis(files.poll_interval_ms);
    let telemetry = &stager.telemetry;
    // The one table, or the tables of the stream's field route.
    let destination = stager.tables.of_topic(&config.stream).await?;
    let destination = &destination;
    let start_types = &destination.lead().types;

    if files.path == "-" {
        let id = PartitionId::new(&config.stream, "stdin");
        let mut types = start_types.clone();
        let resumed = stager
            .resume_into(std::slice::from_ref(destination), std::slice::from_ref(&id))
            .await?;
        let tables = destination.tables().len();
        let mut resumes = resumed
            .into_iter()
            .next()
            .unwrap_or_else(|| Resumes::start(tables));
        let mut stdin = StdinPartition::spawn(&config.stream, resumes.after(), &limits);
        telemetry.source_answered(true);
        while !stdin.is_finished() && !*shutdown.borrow() {
            let started = Instant::now();
            let (returned, read) = blocking(stdin.id().clone(), move || {
                let read = stdin.read(&limits, poll);
                (stdin, read)
            })
            .await?;
            stdin = returned;
            let read = read.map_err(|source| {
                telemetry.source_answered(false);
                Error::Source {
                    path: PathBuf::from("-"),
                    source,
                }
            })?;
            if !read.items.is_empty() {
                let id = stdin.id().clone();
                (types, resumes) = stager
                    .stage_into(destination, &id, types, read.items, resumes, started)
                    .await?;
            }
        }
        return Ok(());
    }

    let dir = Path::new(&files.path);
    let mut partitions: BTreeMap<String, Reading> = BTreeMap::new();
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    loop {
        let listed = list_files(dir);
        telemetry.source_answered(listed.is_ok());
        let listed = listed.map_err(|source| Error::Source {
            path: dir.to_path_buf(),
            source,
        })?;
        let new: Vec<_> = listed
            .into_iter()
            .filter(|(name, _)| !partitions.contains_key(name))
            .collect();
        let ids: Vec<_> = new
            .iter()
            .map(|(name, _)| PartitionId::new(&config.stream, name))
            .collect();
        let destinations = vec![destination.clone(); ids.len()];
        let resumed = stager.resume_into(&destinations, &ids).await?;
        for ((name, path), resumes) in new.into_iter().zip(resumed) {
            let part = FilePartition::new(&config.stream, &name, path, resumes.after());
            let types = start_types.clone();
            partitions.insert(
                name,
                Reading {
                    part,
                    types,
                    resumes,
                },
            );
        }
        let open: Vec<_> = std::mem::take(&mut partitions)
            .into_iter()
            .filter_map(|(name, reading)| {
                if reading.part.is_finished() {
                    partitions.insert(name, reading);
                    None
                } else {
                    Some((name, reading))
                }
            })
            .collect();
        let shutdown_rx = shutdown.clone();
        let results: Vec<_> = futures::stream::iter(open)
            .map(|(name, reading)| {
                let shutdown = shutdown_rx.clone();
                async move {
                    let drained =
                        drain_partition(stager, destination, &limits, reading, &shutdown).await;
                    (name, drained)
                }
            })
            .buffer_unordered(workers)
            .collect()
            .await;
        let mut read_any = false;
        for (name, result) in results {
            let (reading, read) = result?;
            read_any |= read;
            partitions.insert(name, reading);
        }
        // A file deleted since its listing simply has nothing left to read.
        let unread = partitions
            .values()
            .map(|r| r.part.unread_bytes().unwrap_or(0))
            .sum();
        telemetry.source_unread(unread);
        if *shutdown.borrow() || (mode == Mode::Once && !read_any) {
            return Ok(());
        }
        if !read_any {
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

/// A file being read: where, the column types its batches widened, and
/// where each of its tables has it staged up to.
struct Reading {
    part: FilePartition,
    types: ColumnTypes,
    resumes: Resumes,
}

/// Reads and stages batches of one file until it has nothing more right now.
/// Returns the file and whether anything was read.
async fn drain_partition(
    stager: &Stager,
    destination: &Destination,
    limits: &ReadLimits,
    reading: Reading,
    shutdown: &watch::Receiver<bool>,
) -> Result<(Reading, bool)> {
    let Reading {
        mut part,
        mut types,
        mut resumes,
    } = reading;
    let mut read_any = false;
    while !*shutdown.borrow() {
        let limits = *limits;
        let started = Instant::now();
        let (returned, read) = blocking(part.id().clone(), move || {
            let read = part.read(&limits);
            (part, read)
        })
        .await?;
        part = returned;
        let read = read.map_err(|source| {
            stager.telemetry.source_answered(false);
            Error::Source {
                path: PathBuf::from(part.id().partition()),
                source,
            }
        })?;
        if read.empty_file {
            record_empty_file(stager, destination.lead(), part.id()).await?;
        }
        let Some(last) = read.items.last().map(SourceItem::position) else {
            break;
        };
        read_any = true;
        let id = part.id().clone();
        let end = read.end;
        (types, resumes) = stager
            .stage_into(destination, &id, types, read.items, resumes, started)
            .await?;
        // Every table has the batch; otherwise another writer staged from
        // its first position in a table: go on after the slowest table.
        match resumes.after() {
            Some(after) if after != last => part.resume_after(after),
            _ => part.committed(end),
        }
    }
    let reading = Reading {
        part,
        types,
        resumes,
    };
    Ok((reading, read_any))
}

async fn record_empty_file(stager: &Stager, table: &Table, id: &PartitionId) -> Result<()> {
    let letter = DeadLetter::new(0, Reason::EmptyFile, "file is empty", &[], 0);
    let file = dead_letter::encode(
        id,
        0,
        0,
        std::slice::from_ref(&letter),
        table.settings.codec,
    )?;
    let path = id.dead_letter_file(0);
    table
        .lake
        .store()
        .put(&path, file.into())
        .await
        .map_err(|e| tributary_lake::Error::store(&path, e))?;
    stager.telemetry.empty_file(&table.id, id);
    Ok(())
}

pub(crate) async fn blocking<T: Send + 'static>(
    partition: PartitionId,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| Error::Worker {
            partition: partition.to_string(),
            source,
        })
}
