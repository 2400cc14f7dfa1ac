//! Reading one shard: resume from the lake, poll GetRecords within the
//! shard's limits, de-aggregate, stage batches on the position chain.
//!
//! ```text
//!   resume ─► iterator AFTER_SEQUENCE_NUMBER (last staged or compacted sequence)
//!          │  or TRIM_HORIZON / LATEST for a shard with nothing in the lake
//!          ▼
//!   GetRecords ──► records ─► batch (whole Kinesis records) ─► stage batch n
//!      │  ▲   throttled / 5xx: back off, same iterator        │
//!      │  └── expired iterator: new one after the last read   ├─ staged: n + 1
//!      │                                                       └─ already staged by another
//!      ▼                                                          worker: continue after its
//!   SHARD_END: stage the rest, mark the shard finished            last sequence, batch n + 1
//! ```
//!
//! Positions: batch `n`'s `i`-th user record (counting the sub-records of
//! aggregates) has position `n << 24 | i`, so every row of a shard has a
//! unique, ordered `_position`, the table watermark is the last position of
//! the last compacted batch, and `position >> 24` is the batch number. The
//! Kinesis sequence numbers of a batch are in its row file's metadata
//! (`tributary.source.*`); batches always end on a whole Kinesis record, so
//! `AFTER_SEQUENCE_NUMBER` of the last one is exactly where the next begins.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use object_store::path::Path;
use object_store::{PutMode, PutOptions, PutPayload};
use tokio::sync::watch;
use tributary_config::{KinesisSourceConfig, KinesisStart};
use tributary_lake::PartitionId;
use tributary_lake::chain::{self, META_SOURCE_PREFIX, StageOutcome};
use tributary_lake::dead_letter::{DeadLetter, Reason};
use tributary_lake::layout::TRIBUTARY_DIR;
use tributary_lake::rowfile::{ColumnType, RowFile};

use tributary_decode::Val;

use super::api::{ApiError, IteratorStart, KinesisApi, Record, Shard};
use super::kpl;
use crate::batch::SourceColumns;
use crate::batch::{ColumnTypes, Message, SourceItem};
use crate::error::{Error, Result};
use crate::run::{Mode, Stager};
use crate::tables::Table;

/// Bits of a position that number the user records within a batch.
pub const INDEX_BITS: u32 = 24;
/// Most user records in one batch.
const MAX_BATCH_ITEMS: usize = (1 << INDEX_BITS) - 1;

const META_FIRST_SEQUENCE: &str = "tributary.source.first_sequence";
const META_LAST_SEQUENCE: &str = "tributary.source.last_sequence";
const META_SHARD_END: &str = "tributary.source.shard_end";

/// The metadata columns, with their types.
pub const COLUMNS: [(&str, ColumnType); 6] = [
    ("_kinesis_stream", ColumnType::String),
    ("_kinesis_shard", ColumnType::String),
    ("_kinesis_sequence", ColumnType::String),
    ("_kinesis_subsequence", ColumnType::Long),
    ("_kinesis_partition_key", ColumnType::String),
    ("_kinesis_arrival_ms", ColumnType::Long),
];

/// What the shard reader shares with the worker that holds its lease.
pub struct ShardControl {
    /// When the lease runs out (ms since the epoch); nothing is staged
    /// within a safety margin of it.
    pub valid_until_ms: Arc<AtomicI64>,
    /// Turns true when the reader should stage what it has and stop.
    pub stop: watch::Receiver<bool>,
}

/// How a shard reader ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardExit {
    /// Read and staged up to `SHARD_END`; marked finished.
    Finished,
    /// Asked to stop (or caught up, with `--once`); what was read is staged.
    Stopped,
    /// The lease ran out before a batch could be staged; the batch was
    /// dropped (its next holder reads it again).
    LeaseExpired,
}

/// Where a shard resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// The next batch number.
    pub next_batch: u64,
    /// The last sequence number in the lake, if any.
    pub after: Option<String>,
    /// Whether the lake already holds the shard up to `SHARD_END`.
    pub shard_end: bool,
}

/// Everything a shard reader needs.
pub struct ShardContext<'a> {
    /// The stager.
    pub stager: &'a Stager,
    /// The one table (Kinesis does not route).
    pub table: &'a Table,
    /// The Kinesis client.
    pub api: &'a KinesisApi,
    /// `[ingest.kinesis]`.
    pub config: &'a KinesisSourceConfig,
    /// The lake's stream name (`ingest.stream`).
    pub stream: &'a str,
    /// Batch limits.
    pub max_records: usize,
    /// Batch limits.
    pub max_bytes: u64,
    /// Batch limits.
    pub max_latency: Duration,
    /// Longest message decoded.
    pub max_message_bytes: u64,
    /// Dead-letter payload limit.
    pub dead_letter_max_payload_bytes: u64,
    /// `--once` stops a shard once it is caught up, or at the first record
    /// that arrived after `started_ms`.
    pub mode: Mode,
    /// When the run started, in milliseconds since the Unix epoch.
    pub started_ms: i64,
}

/// Object marking a shard read and staged to `SHARD_END`.
pub fn finished_marker(id: &PartitionId) -> Path {
    Path::from(format!(
        "{TRIBUTARY_DIR}/kinesis/{}/finished/{}.json",
        id.stream(),
        id.partition()
    ))
}

/// Where `id` resumes: after the newest staged file, or the table's
/// watermark and its compacted marker, whichever is further.
///
/// Staged files are listed *before* the watermark is read: a file the
/// compactor deletes in between was committed first, so the watermark read
/// afterwards covers it.
pub async fn resume(table: &Table, id: &PartitionId) -> Result<Resume> {
    let lake = &table.lake;
    let store = lake.store();
    let mut attempts = 0;
    let staged = loop {
        attempts += 1;
        let files = chain::staged_files(store.as_ref(), id).await?;
        let Some(newest) = files.last() else {
            break None;
        };
        match tributary_lake::read_object(store.as_ref(), &newest.path).await {
            Ok(bytes) => {
                let (_, meta) = RowFile::read_header(&bytes, newest.path.as_ref())?;
                let last = chain::last_position(&meta, newest.path.as_ref())?;
                let source: BTreeMap<String, String> = meta
                    .into_iter()
                    .filter(|(k, _)| k.starts_with(META_SOURCE_PREFIX))
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                    .collect();
                break Some((last, source, newest.path.to_string()));
            }
            // Compacted and deleted since the listing: list again.
            Err(e) if e.is_not_found() && attempts < 5 => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let delta = lake.load_table().await?;
    let watermark = lake.watermark(delta.as_ref(), id).await?;
    let (last, source, origin) = match (staged, watermark) {
        (Some((last, source, path)), w) if w.is_none_or(|w| last >= w) => (last, source, path),
        (_, Some(w)) => match chain::compacted_marker(store.as_ref(), id, w).await? {
            Some(source) => (w, source, id.compacted_marker(w).to_string()),
            None => {
                return Err(Error::KinesisPosition {
                    partition: id.to_string(),
                    reason: format!(
                        "the table's watermark is {w} but {} is missing, so the Kinesis \
                         sequence number to resume after is unknown",
                        id.compacted_marker(w)
                    ),
                });
            }
        },
        // (A staged file and no watermark took the first arm.)
        (_, None) => {
            return Ok(Resume {
                next_batch: 0,
                after: None,
                shard_end: false,
            });
        }
    };
    let after = source
        .get(META_LAST_SEQUENCE)
        .cloned()
        .ok_or_else(|| Error::KinesisPosition {
            partition: id.to_string(),
            reason: format!("{origin} has no {META_LAST_SEQUENCE}"),
        })?;
    Ok(Resume {
        next_batch: (last >> INDEX_BITS) + 1,
        after: Some(after),
        shard_end: source.get(META_SHARD_END).is_some_and(|v| v == "true"),
    })
}

/// The batch being filled.
struct OpenBatch {
    number: u64,
    items: Vec<SourceItem>,
    bytes: u64,
    first_sequence: Option<String>,
    last_sequence: Option<String>,
    started: Option<Instant>,
}

impl OpenBatch {
    fn new(number: u64) -> Self {
        Self {
            number,
            items: Vec::new(),
            bytes: 0,
            first_sequence: None,
            last_sequence: None,
            started: None,
        }
    }

    fn position(&self) -> u64 {
        self.number << INDEX_BITS | self.items.len() as u64
    }
}

/// What staging a batch led to.
enum Staged {
    /// Go on reading from where we are.
    Continue,
    /// Another worker staged this batch with other extents: continue after
    /// its last sequence number.
    Reseek(Resume),
    /// The lease runs out: stop without staging.
    LeaseExpired,
}

/// Reads `shard` while this worker holds its lease.
pub async fn read_shard(
    ctx: &ShardContext<'_>,
    shard: &Shard,
    has_parents: bool,
    mut control: ShardControl,
) -> Result<ShardExit> {
    let id = PartitionId::new(ctx.stream, &shard.id);
    let telemetry = &ctx.stager.telemetry;
    let mut types = ctx.table.types.clone();
    if ctx.config.metadata_columns {
        for (name, ty) in COLUMNS {
            types.fix_source_column(name, ty);
        }
    }
    let resume = resume(ctx.table, &id).await?;
    tracing::info!(
        shard = %id, next_batch = resume.next_batch, after = ?resume.after,
        shard_end = resume.shard_end, "resuming shard"
    );
    let Some((mut batch, mut iterator, mut last_read)) =
        reading_from(ctx, &id, shard, has_parents, resume, &mut control).await?
    else {
        return Ok(ShardExit::Finished);
    };
    let mut backoff = Duration::ZERO;
    let mut last_call: Option<Instant> = None;
    let limit = ctx.config.max_records_per_call;
    loop {
        let Some(current) = iterator.clone() else {
            return Ok(ShardExit::Stopped);
        };
        if *control.stop.borrow() {
            return finish(ctx, &id, &mut types, &mut batch, false, &control).await;
        }
        // The shard allows 5 calls per second, shared by every consumer.
        if let Some(at) = last_call {
            let pause = Duration::from_millis(ctx.config.min_poll_interval_ms).max(backoff);
            let wait = pause.saturating_sub(at.elapsed());
            if !wait.is_zero() && !sleep_or_stop(wait, &mut control.stop).await {
                continue;
            }
        }
        last_call = Some(Instant::now());
        let answer = match ctx.api.get_records(&current, limit).await {
            Ok(answer) => answer,
            Err(e) if e.is_expired_iterator() => {
                tracing::info!(shard = %id, "shard iterator expired; getting a new one");
                iterator = new_iterator(ctx, shard, has_parents, &last_read, &mut control).await?;
                continue;
            }
            Err(e) if e.is_retryable() => {
                backoff = next_backoff(backoff, ctx.config.max_backoff_ms);
                telemetry.kinesis.retried(&id, &e);
                tracing::debug!(shard = %id, error = %e, backoff_ms = backoff.as_millis() as u64, "GetRecords retried");
                continue;
            }
            Err(source) => return Err(kinesis_error(&id, source)),
        };
        backoff = Duration::ZERO;
        telemetry.source_answered(true);
        telemetry.kinesis.read(
            &id,
            answer.records.len(),
            answer.bytes,
            answer.millis_behind_latest,
        );
        let empty = answer.records.is_empty();
        let mut reseeked = false;
        let mut arrived_after_start = false;
        for record in answer.records {
            if ctx.mode == Mode::Once && record.arrival_ms.is_some_and(|at| at > ctx.started_ms) {
                // `--once`: this record and the rest are the next run's.
                arrived_after_start = true;
                break;
            }
            if batch.items.is_empty() {
                batch.started = Some(Instant::now());
            }
            let sequence = record.sequence.clone();
            push_record(ctx, &id, &mut batch, record);
            last_read = Some(sequence);
            if batch.items.len() >= ctx.max_records.min(MAX_BATCH_ITEMS - 1)
                || batch.bytes >= ctx.max_bytes
            {
                match stage(ctx, &id, &mut types, &mut batch, false, &control).await? {
                    Staged::Continue => {}
                    Staged::LeaseExpired => return Ok(ShardExit::LeaseExpired),
                    Staged::Reseek(at) => {
                        let Some(position) =
                            reading_from(ctx, &id, shard, has_parents, at, &mut control).await?
                        else {
                            return Ok(ShardExit::Finished);
                        };
                        (batch, iterator, last_read) = position;
                        reseeked = true;
                        break;
                    }
                }
            }
        }
        if reseeked {
            continue;
        }
        if arrived_after_start {
            return finish(ctx, &id, &mut types, &mut batch, false, &control).await;
        }
        match answer.next_iterator {
            None => {
                // SHARD_END: everything of the shard is read.
                match stage(ctx, &id, &mut types, &mut batch, true, &control).await? {
                    Staged::LeaseExpired => return Ok(ShardExit::LeaseExpired),
                    Staged::Continue | Staged::Reseek(_) => {}
                }
                mark_finished(ctx, &id).await?;
                return Ok(ShardExit::Finished);
            }
            Some(next) => iterator = Some(next),
        }
        let caught_up = empty && answer.millis_behind_latest.unwrap_or(0) == 0;
        let late = batch
            .started
            .is_some_and(|s| s.elapsed() >= ctx.max_latency);
        if late || (caught_up && ctx.mode == Mode::Once) {
            match stage(ctx, &id, &mut types, &mut batch, false, &control).await? {
                Staged::Continue => {}
                Staged::LeaseExpired => return Ok(ShardExit::LeaseExpired),
                Staged::Reseek(at) => {
                    let Some(position) =
                        reading_from(ctx, &id, shard, has_parents, at, &mut control).await?
                    else {
                        return Ok(ShardExit::Finished);
                    };
                    (batch, iterator, last_read) = position;
                    continue;
                }
            }
        }
        if caught_up {
            if ctx.mode == Mode::Once {
                return Ok(ShardExit::Stopped);
            }
            // Nothing new: wait, but not past the open batch's deadline.
            let idle = Duration::from_millis(ctx.config.idle_poll_ms);
            let idle = match batch.started {
                Some(s) => idle.min(ctx.max_latency.saturating_sub(s.elapsed())),
                None => idle,
            };
            sleep_or_stop(idle, &mut control.stop).await;
        }
    }
}

/// Stages what is open and reports how the reader stopped.
async fn finish(
    ctx: &ShardContext<'_>,
    id: &PartitionId,
    types: &mut ColumnTypes,
    batch: &mut OpenBatch,
    shard_end: bool,
    control: &ShardControl,
) -> Result<ShardExit> {
    match stage(ctx, id, types, batch, shard_end, control).await? {
        Staged::LeaseExpired => Ok(ShardExit::LeaseExpired),
        Staged::Continue | Staged::Reseek(_) => Ok(ShardExit::Stopped),
    }
}

/// Appends one Kinesis record (its user records, if aggregated) to `batch`.
fn push_record(ctx: &ShardContext<'_>, id: &PartitionId, batch: &mut OpenBatch, record: Record) {
    if batch.first_sequence.is_none() {
        batch.first_sequence = Some(record.sequence.clone());
    }
    batch.bytes += record.data.len() as u64;
    let columns = |sub: usize, key: &str| -> SourceColumns {
        if !ctx.config.metadata_columns {
            return SourceColumns::new();
        }
        let mut row = SourceColumns::with_capacity(COLUMNS.len());
        let values = [
            Val::Str(ctx.config.stream_name.clone().into()),
            Val::Str(id.partition().to_string().into()),
            Val::Str(record.sequence.clone().into()),
            Val::Long(sub as i64),
            Val::Str(key.to_string().into()),
            record.arrival_ms.map_or(Val::Null, Val::Long),
        ];
        for ((name, _), value) in COLUMNS.iter().zip(values) {
            row.push(((*name).into(), value));
        }
        row
    };
    match kpl::deaggregate(&record.data) {
        Ok(None) => {
            let columns = columns(0, &record.partition_key);
            let position = batch.position();
            batch
                .items
                .push(message(ctx, position, record.data.clone(), columns));
        }
        Ok(Some(users)) => {
            for (sub, user) in users.iter().enumerate() {
                let columns = columns(sub, user.partition_key);
                let position = batch.position();
                batch
                    .items
                    .push(message(ctx, position, user.data.to_vec(), columns));
            }
        }
        Err(reason) => {
            let position = batch.position();
            batch.items.push(SourceItem::Bad(DeadLetter::new(
                position,
                Reason::Framing,
                format!("Kinesis record {}: {reason}", record.sequence),
                &record.data,
                ctx.dead_letter_max_payload_bytes,
            )));
        }
    }
    batch.last_sequence = Some(record.sequence);
}

fn message(
    ctx: &ShardContext<'_>,
    position: u64,
    payload: Vec<u8>,
    columns: SourceColumns,
) -> SourceItem {
    if payload.len() as u64 > ctx.max_message_bytes {
        return SourceItem::oversized(
            position,
            &payload,
            ctx.max_message_bytes,
            ctx.dead_letter_max_payload_bytes,
        );
    }
    let mut message = Message::new(position, payload);
    message.columns = columns;
    SourceItem::Message(message)
}

/// Stages `batch` (if it holds anything) and opens the next one.
async fn stage(
    ctx: &ShardContext<'_>,
    id: &PartitionId,
    types: &mut ColumnTypes,
    batch: &mut OpenBatch,
    shard_end: bool,
    control: &ShardControl,
) -> Result<Staged> {
    if batch.items.is_empty() {
        return Ok(Staged::Continue);
    }
    // Never stage in the last quarter of the lease: by the time the write
    // lands, another worker may own the shard.
    let margin = (ctx.config.lease_ms / 4) as i64;
    let now = chrono::Utc::now().timestamp_millis();
    if now + margin >= control.valid_until_ms.load(Ordering::SeqCst) {
        tracing::warn!(shard = %id, batch = batch.number, "shard lease runs out; batch not staged");
        return Ok(Staged::LeaseExpired);
    }
    let mut source = vec![
        (
            META_FIRST_SEQUENCE.to_string(),
            batch.first_sequence.clone().unwrap_or_default(),
        ),
        (
            META_LAST_SEQUENCE.to_string(),
            batch.last_sequence.clone().unwrap_or_default(),
        ),
    ];
    if shard_end {
        source.push((META_SHARD_END.to_string(), "true".to_string()));
    }
    let number = batch.number;
    let items = std::mem::take(&mut batch.items);
    let started = batch.started.unwrap_or_else(Instant::now);
    let (returned, outcome) = ctx
        .stager
        .stage_with_source(ctx.table, id, types.clone(), items, started, source)
        .await?;
    *types = returned;
    match outcome {
        StageOutcome::Staged => {
            *batch = OpenBatch::new(number + 1);
            Ok(Staged::Continue)
        }
        StageOutcome::AlreadyStaged { existing_last } => {
            // Another worker staged batch `number` (we overlapped with it):
            // its file says where it ended.
            let path = id.staged_file(number << INDEX_BITS);
            let store = ctx.table.lake.store();
            let bytes = tributary_lake::read_object(store.as_ref(), &path).await;
            let at = match bytes {
                Ok(bytes) => {
                    let (_, meta) = RowFile::read_header(&bytes, path.as_ref())?;
                    let text =
                        |k: &str| meta.get(k).map(|v| String::from_utf8_lossy(v).into_owned());
                    Resume {
                        next_batch: (existing_last >> INDEX_BITS) + 1,
                        after: text(META_LAST_SEQUENCE),
                        shard_end: text(META_SHARD_END).is_some_and(|v| v == "true"),
                    }
                }
                // Compacted since: the lake says where we are.
                Err(e) if e.is_not_found() => resume(ctx.table, id).await?,
                Err(e) => return Err(e.into()),
            };
            tracing::info!(shard = %id, batch = number, after = ?at.after, "batch staged by another worker; continuing after it");
            Ok(Staged::Reseek(at))
        }
    }
}

/// A new shard iterator after `after`, or at the configured start.
/// Where reading goes on from `resume` (the lake's position, or the end of
/// another writer's batch): the open batch, the shard iterator and the last
/// sequence number read; `None` once the shard is staged to its end (then it
/// is marked finished).
async fn reading_from(
    ctx: &ShardContext<'_>,
    id: &PartitionId,
    shard: &Shard,
    has_parents: bool,
    resume: Resume,
    control: &mut ShardControl,
) -> Result<Option<(OpenBatch, Option<String>, Option<String>)>> {
    if resume.shard_end {
        mark_finished(ctx, id).await?;
        return Ok(None);
    }
    let iterator = new_iterator(ctx, shard, has_parents, &resume.after, control).await?;
    Ok(Some((
        OpenBatch::new(resume.next_batch),
        iterator,
        resume.after,
    )))
}

async fn new_iterator(
    ctx: &ShardContext<'_>,
    shard: &Shard,
    has_parents: bool,
    after: &Option<String>,
    control: &mut ShardControl,
) -> Result<Option<String>> {
    let id = PartitionId::new(ctx.stream, &shard.id);
    let start = match after {
        Some(seq) => IteratorStart::AfterSequence(seq.clone()),
        // A child of a split or merge starts at its beginning, or records
        // between the parent's end and "now" would be skipped.
        None if ctx.config.start == KinesisStart::Latest && !has_parents => IteratorStart::Latest,
        None => IteratorStart::TrimHorizon,
    };
    let mut backoff = Duration::ZERO;
    loop {
        match ctx.api.shard_iterator(&shard.id, &start).await {
            Ok(iterator) => return Ok(Some(iterator)),
            Err(e) if e.is_retryable() => {
                backoff = next_backoff(backoff, ctx.config.max_backoff_ms);
                ctx.stager.telemetry.kinesis.retried(&id, &e);
                if !sleep_or_stop(backoff, &mut control.stop).await {
                    return Ok(None);
                }
            }
            Err(source) => return Err(kinesis_error(&id, source)),
        }
    }
}

async fn mark_finished(ctx: &ShardContext<'_>, id: &PartitionId) -> Result<()> {
    let path = finished_marker(id);
    let body = serde_json::json!({ "shard": id.partition(), "finished_at_ms": chrono::Utc::now().timestamp_millis() });
    match ctx
        .table
        .lake
        .store()
        .put_opts(
            &path,
            PutPayload::from(body.to_string()),
            PutOptions::from(PutMode::Create),
        )
        .await
    {
        Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => {
            tracing::info!(shard = %id, "shard read to SHARD_END and staged");
            Ok(())
        }
        Err(e) => Err(tributary_lake::Error::store(&path, e).into()),
    }
}

fn kinesis_error(id: &PartitionId, source: ApiError) -> Error {
    Error::Kinesis {
        shard: id.to_string(),
        source,
    }
}

/// Doubles `current` from 100 ms up to `max_ms`, with up to 25% jitter.
pub fn next_backoff(current: Duration, max_ms: u64) -> Duration {
    let base = if current.is_zero() {
        Duration::from_millis(100)
    } else {
        (current * 2).min(Duration::from_millis(max_ms))
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let jitter = base.mul_f64(f64::from(nanos % 1000) / 4000.0);
    (base + jitter).min(Duration::from_millis(max_ms))
}

/// Sleeps for `wait`; `false` if `stop` turned true first.
async fn sleep_or_stop(wait: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(wait) => true,
        _ = stop.changed() => false,
    }
}
