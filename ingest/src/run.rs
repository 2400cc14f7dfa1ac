//! The ingest run loop: discover partitions, resume each from the lake, read
//! batches, encode them off the reactor, stage them on the chain.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use object_store::ObjectStoreExt;
use tokio::sync::watch;
use tributary_config::IngestConfig;
use tributary_lake::chain::{self, StageOutcome};
use tributary_lake::{Lake, PartitionId, columns};

use crate::batch::{BatchSettings, ColumnTypes, encode_batch};
use crate::error::{Error, Result};
use crate::schemas::{self, Schemas};
use crate::source::{FilePartition, PartitionRead, ReadLimits, StdinPartition, list_files};
use crate::telemetry::IngestTelemetry;
use tributary_lake::dead_letter::{self, DeadLetter, Reason};
use tributary_schema_registry::client::{Client, describe};

/// Whether ingest follows its sources or stops once they are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Keep watching for new data until shut down.
    Follow,
    /// Read what is there now (every file counts as complete), stage it, stop.
    Once,
}

/// What every partition worker shares.
struct Context {
    lake: Lake,
    settings: BatchSettings,
    registry: Option<Client>,
    limits: ReadLimits,
    telemetry: IngestTelemetry,
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
    mut shutdown: watch::Receiver<bool>,
    telemetry: IngestTelemetry,
) -> Result<()> {
    let files = config.files.as_ref().ok_or_else(|| Error::Source {
        path: PathBuf::from("(no [ingest.files] section)"),
        source: std::io::Error::other("no source configured"),
    })?;
    let table = lake.load_table().await?;
    let mut types = ColumnTypes::from_config(config);
    if let Some(table) = &table {
        for (name, ty) in columns::table_columns(table)? {
            types.fix_table_column(&name, ty);
        }
    }
    let ctx = Context {
        lake: lake.clone(),
        settings: BatchSettings::from_config(config),
        registry: schemas::client(config).await?,
        limits: ReadLimits {
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
        },
        telemetry,
    };
    let poll = Duration::from_millis(files.poll_interval_ms);
    let resume = |id: PartitionId| {
        let lake = lake.clone();
        let table = table.clone();
        async move {
            let watermark = lake.watermark(table.as_ref(), &id).await?;
            Ok::<_, Error>(chain::resume_after(lake.store().as_ref(), &id, watermark).await?)
        }
    };

    if files.path == "-" {
        let id = PartitionId::new(&config.stream, "stdin");
        let mut stdin = StdinPartition::spawn(&config.stream, resume(id).await?, &ctx.limits);
        ctx.telemetry.source_answered(true);
        while !stdin.is_finished() && !*shutdown.borrow() {
            let started = Instant::now();
            let (returned, read) = blocking(stdin.id().clone(), {
                let limits = ctx.limits;
                move || {
                    let read = stdin.read(&limits, poll);
                    (stdin, read)
                }
            })
            .await?;
            stdin = returned;
            let read = read.map_err(|source| {
                ctx.telemetry.source_answered(false);
                Error::Source {
                    path: PathBuf::from("-"),
                    source,
                }
            })?;
            if !read.items.is_empty() {
                let id = stdin.id().clone();
                (types, _) = stage_read(&ctx, &id, types, read, started).await?;
            }
        }
        return Ok(());
    }

    let dir = Path::new(&files.path);
    let mut partitions: BTreeMap<String, (FilePartition, ColumnTypes)> = BTreeMap::new();
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    loop {
        let listed = list_files(dir);
        ctx.telemetry.source_answered(listed.is_ok());
        let listed = listed.map_err(|source| Error::Source {
            path: dir.to_path_buf(),
            source,
        })?;
        for (name, path) in listed {
            if !partitions.contains_key(&name) {
                let id = PartitionId::new(&config.stream, &name);
                let after = resume(id).await?;
                partitions.insert(
                    name.clone(),
                    (
                        FilePartition::new(&config.stream, &name, path, after),
                        types.clone(),
                    ),
                );
            }
        }
        let open: Vec<_> = std::mem::take(&mut partitions)
            .into_iter()
            .filter_map(|(name, (part, types))| {
                if part.is_finished() {
                    partitions.insert(name, (part, types));
                    None
                } else {
                    Some((name, part, types))
                }
            })
            .collect();
        let ctx = &ctx;
        let shutdown_rx = shutdown.clone();
        let results: Vec<_> = futures::stream::iter(open)
            .map(|(name, part, types)| {
                let shutdown = shutdown_rx.clone();
                async move { (name, drain_partition(ctx, part, types, &shutdown).await) }
            })
            .buffer_unordered(workers)
            .collect()
            .await;
        let mut read_any = false;
        for (name, result) in results {
            let (part, types, read) = result?;
            read_any |= read;
            partitions.insert(name, (part, types));
        }
        // A file deleted since its listing simply has nothing left to read.
        let unread = partitions
            .values()
            .map(|(part, _)| part.unread_bytes().unwrap_or(0))
            .sum();
        ctx.telemetry.source_unread(unread);
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

/// Reads and stages batches of one file until it has nothing more right now.
/// Returns the partition, its column types, and whether anything was read.
async fn drain_partition(
    ctx: &Context,
    mut part: FilePartition,
    mut types: ColumnTypes,
    shutdown: &watch::Receiver<bool>,
) -> Result<(FilePartition, ColumnTypes, bool)> {
    let mut read_any = false;
    while !*shutdown.borrow() {
        let limits = ctx.limits;
        let started = Instant::now();
        let (returned, read) = blocking(part.id().clone(), move || {
            let read = part.read(&limits);
            (part, read)
        })
        .await?;
        part = returned;
        let read = read.map_err(|source| {
            ctx.telemetry.source_answered(false);
            Error::Source {
                path: PathBuf::from(part.id().partition()),
                source,
            }
        })?;
        if read.empty_file {
            record_empty_file(ctx, part.id()).await?;
        }
        if read.items.is_empty() {
            break;
        }
        read_any = true;
        let id = part.id().clone();
        let end = read.end;
        let (returned_types, outcome) = stage_read(ctx, &id, types, read, started).await?;
        types = returned_types;
        match outcome {
            StageOutcome::Staged => part.committed(end),
            StageOutcome::AlreadyStaged { existing_last } => part.resume_after(existing_last),
        }
    }
    Ok((part, types, read_any))
}

/// Encodes a read (begun at `started`) off the reactor and stages it: dead
/// letters first, then the row file (the commit point).
async fn stage_read(
    ctx: &Context,
    id: &PartitionId,
    types: ColumnTypes,
    read: PartitionRead,
    started: Instant,
) -> Result<(ColumnTypes, StageOutcome)> {
    let schemas = Schemas::resolve(
        ctx.registry.as_ref(),
        &read.items,
        |reference, error, wait| {
            ctx.telemetry.registry_unavailable();
            tracing::warn!(
                partition = %id,
                schema = %describe(reference),
                %error,
                retry_in_ms = wait.as_millis() as u64,
                "waiting for the schema registry"
            );
        },
    )
    .await;
    let settings = ctx.settings.clone();
    let task_id = id.clone();
    let (types, batch) = blocking(id.clone(), move || {
        let mut types = types;
        let batch = encode_batch(&task_id, &settings, &schemas, &mut types, read.items);
        (types, batch)
    })
    .await?;
    let batch = batch?;
    let store = ctx.lake.store();
    if let Some(file) = &batch.dead_letter_file {
        let path = id.dead_letter_file(batch.first);
        store
            .put(&path, file.clone().into())
            .await
            .map_err(|e| tributary_lake::Error::store(&path, e))?;
    }
    let outcome = chain::stage(store.as_ref(), id, batch.first, batch.row_file.clone()).await?;
    match outcome {
        StageOutcome::Staged => ctx.telemetry.batch_staged(id, &batch, started.elapsed()),
        StageOutcome::AlreadyStaged { existing_last } => {
            ctx.telemetry.batch_dropped(id, &batch, existing_last)
        }
    }
    Ok((types, outcome))
}

async fn record_empty_file(ctx: &Context, id: &PartitionId) -> Result<()> {
    let letter = DeadLetter::new(0, Reason::EmptyFile, "file is empty", &[], 0);
    let file = dead_letter::encode(id, 0, 0, std::slice::from_ref(&letter), ctx.settings.codec)?;
    let path = id.dead_letter_file(0);
    ctx.lake
        .store()
        .put(&path, file.into())
        .await
        .map_err(|e| tributary_lake::Error::store(&path, e))?;
    ctx.telemetry.empty_file(id);
    Ok(())
}

async fn blocking<T: Send + 'static>(
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
