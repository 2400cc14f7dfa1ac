//! The exactly-once position chain (DESIGN.md, "Exactly-once into the table").
//!
//! ```text
//!            ┌───────────────────────── resume ─────────────────────────┐
//!            │ after max(table watermark, `last` of newest staged file) │
//!            └────────────────────────────┬─────────────────────────────┘
//!                                         ▼
//!   read a batch [first, last] ──► put `<first>.avro` create-only
//!                                         │
//!                      ┌──────────────────┴──────────────────┐
//!                  created                              already exists
//!                      │                                     │
//!            next batch starts                 someone staged from `first`:
//!               after `last`                drop ours, read that file's `last`,
//!                                              seek after it, go on
//!
//!   compactor: keep rows with position > watermark, commit data and the new
//!   watermark in one Delta transaction, then delete the staged files.
//! ```
//!
//! Positions are `u64`s: byte offsets for files, offsets for Kafka. Sources
//! whose own positions do not fit (Kinesis sequence numbers) number their
//! batches densely and keep their own first/last position in row-file
//! metadata under [`META_SOURCE_PREFIX`]; after each commit the compactor
//! copies that metadata of a partition's newest compacted file into a
//! *compacted marker* before it deletes the files, so the source position
//! of the table's watermark is always readable:
//!
//! ```text
//!   staged <first>.avro {tributary.source.*}  ── compact ──► Delta commit (txn = last)
//!        ──► put _tributary/compacted/<stream>/<partition>/<last>.json {tributary.source.*}
//!        ──► delete the staged files
//! ```

use std::collections::BTreeMap;

use bytes::Bytes;
use deltalake::arrow::array::{AsArray, RecordBatch};
use deltalake::arrow::compute::{cast, min};
use deltalake::arrow::datatypes::{DataType, Date32Type, TimeUnit, TimestampMicrosecondType};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::{Error, Result};
use crate::layout::{PartitionId, parse_position_name};
use crate::rowfile::RowFile;

/// Microseconds in a day.
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Row-file metadata key: the stream.
pub const META_STREAM: &str = "tributary.stream";
/// Row-file metadata key: the source partition.
pub const META_PARTITION: &str = "tributary.partition";
/// Row-file metadata key: the first source position the file covers.
pub const META_FIRST_POSITION: &str = "tributary.first_position";
/// Row-file metadata key: the last source position the file covers (every
/// message up to it was staged here or dead-lettered).
pub const META_LAST_POSITION: &str = "tributary.last_position";

/// Row-file metadata keys with this prefix hold the source's own position
/// of the batch (e.g. `tributary.source.last_sequence`), copied into the
/// compacted marker when the file is compacted.
pub const META_SOURCE_PREFIX: &str = "tributary.source.";

/// Row-file metadata key: the earliest event time of the file's rows, in
/// microseconds since the Unix epoch (the event-time column's, else midnight
/// of the row's `date`; empty when no row has either). A period is not
/// declared complete while a staged file may still add rows to it (the
/// compactor's `events::complete`).
pub const META_FIRST_EVENT_TIME: &str = "tributary.first_event_time";

/// What a row file's header says of its earliest row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EarliestRow {
    /// It does not say (written by a version before the key existed).
    Unknown,
    /// No row has an event time or a date.
    Undated,
    /// The earliest event time, in microseconds since the Unix epoch.
    At(i64),
}

/// A staged row file as listed in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedFile {
    /// Its object path.
    pub path: Path,
    /// The first position it covers (from its name).
    pub first: u64,
    /// Its size in bytes.
    pub size: u64,
    /// When it was written, as the store reports it.
    pub last_modified: chrono::DateTime<chrono::Utc>,
}

/// What happened to a batch offered to the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageOutcome {
    /// The row file was created.
    Staged,
    /// A file starting at the same position already existed; the batch was
    /// dropped. Continue after `existing_last`.
    AlreadyStaged {
        /// `last` position of the existing file.
        existing_last: u64,
    },
}

/// Writes `file` (a row file covering `[first, …]`) create-only as
/// `partition`'s staged file for `first`.
pub async fn stage(
    store: &dyn ObjectStore,
    partition: &PartitionId,
    first: u64,
    file: Bytes,
) -> Result<StageOutcome> {
    let path = partition.staged_file(first);
    let options = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    match store.put_opts(&path, PutPayload::from(file), options).await {
        Ok(_) => Ok(StageOutcome::Staged),
        Err(object_store::Error::AlreadyExists { .. }) => Ok(StageOutcome::AlreadyStaged {
            existing_last: last_position_of(store, &path).await?,
        }),
        Err(e) => Err(Error::store(&path, e)),
    }
}

/// Writes the dead letters of a batch of `partition` covering
/// `[first, last]` (before its row file is staged), create-only at
/// `<first>.avro`. If that name holds the dead letters of another extent —
/// another writer staged from the same first position (a zombie), or this
/// partition batched differently before a crash — ours go beside it at
/// `<first>-<last>.avro`: whichever row file wins the chain decides which
/// rows exist, but no writer's dead letters may be lost (where the extents
/// overlap, a dead letter is recorded twice).
pub async fn stage_dead_letters(
    store: &dyn ObjectStore,
    partition: &PartitionId,
    first: u64,
    last: u64,
    file: Bytes,
) -> Result<()> {
    let path = partition.dead_letter_file(first);
    let options = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    match store.put_opts(&path, file.clone().into(), options).await {
        Ok(_) => Ok(()),
        Err(object_store::Error::AlreadyExists { .. }) => {
            if last_position_of(store, &path).await? == last {
                return Ok(());
            }
            let other = partition.dead_letter_file_of_extent(first, last);
            store
                .put(&other, file.into())
                .await
                .map(|_| ())
                .map_err(|e| Error::store(&other, e))
        }
        Err(e) => Err(Error::store(&path, e)),
    }
}

/// The staged row files of `partition`, in position order.
pub async fn staged_files(
    store: &dyn ObjectStore,
    partition: &PartitionId,
) -> Result<Vec<StagedFile>> {
    let dir = partition.staging_dir();
    let listed: Vec<_> = store
        .list(Some(&dir))
        .try_collect()
        .await
        .map_err(|e| Error::store(&dir, e))?;
    let mut files: Vec<StagedFile> = listed
        .into_iter()
        .filter_map(|meta| {
            let first = parse_position_name(meta.location.filename()?)?;
            Some(StagedFile {
                path: meta.location,
                first,
                size: meta.size,
                last_modified: meta.last_modified,
            })
        })
        .collect();
    files.sort_by_key(|f| f.first);
    Ok(files)
}

/// Every partition that has staged row files, in name order.
pub async fn staged_partitions(store: &dyn ObjectStore) -> Result<Vec<PartitionId>> {
    let root = crate::layout::staging_root();
    let streams = store
        .list_with_delimiter(Some(&root))
        .await
        .map_err(|e| Error::store(&root, e))?;
    let mut partitions = Vec::new();
    for stream_dir in streams.common_prefixes {
        let listed = store
            .list_with_delimiter(Some(&stream_dir))
            .await
            .map_err(|e| Error::store(&stream_dir, e))?;
        for dir in listed.common_prefixes {
            let parts: Vec<_> = dir.parts().collect();
            if let [.., stream, partition] = parts.as_slice()
                && let Some(id) = PartitionId::from_safe_parts(stream.as_ref(), partition.as_ref())
            {
                partitions.push(id);
            }
        }
    }
    partitions.sort();
    Ok(partitions)
}

/// The `last` position recorded in the header of the row file at `path`.
pub async fn last_position_of(store: &dyn ObjectStore, path: &Path) -> Result<u64> {
    let bytes = crate::read_object(store, path).await?;
    let (_, metadata) = RowFile::read_header(&bytes, path.as_ref())?;
    last_position(&metadata, path.as_ref())
}

/// The `last` position in a row file's header `metadata`; `path` names the
/// file in the error.
pub fn last_position(metadata: &BTreeMap<String, Vec<u8>>, path: &str) -> Result<u64> {
    metadata
        .get(META_LAST_POSITION)
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
        .ok_or_else(|| Error::CorruptRowFile {
            path: path.to_string(),
            reason: format!("no numeric {META_LAST_POSITION} in its metadata"),
        })
}

/// The header metadata of a row or dead-letter file of `partition` covering
/// positions `[first, last]`.
pub fn file_metadata(
    partition: &PartitionId,
    first: u64,
    last: u64,
) -> [(&'static str, String); 4] {
    [
        (META_STREAM, partition.stream().to_string()),
        (META_PARTITION, partition.partition().to_string()),
        (META_FIRST_POSITION, first.to_string()),
        (META_LAST_POSITION, last.to_string()),
    ]
}

/// The [`META_FIRST_EVENT_TIME`] entry of a row file holding `batch`, whose
/// event time is in column `event_time`.
pub fn first_event_time_metadata(
    batch: &RecordBatch,
    event_time: Option<&str>,
) -> (&'static str, String) {
    let timestamp = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let from_column = event_time
        .and_then(|name| batch.column_by_name(name))
        .and_then(|times| cast(times, &timestamp).ok())
        .and_then(|micros| min(micros.as_primitive::<TimestampMicrosecondType>()));
    let first = from_column.or_else(|| {
        let dates = batch.column_by_name("date")?;
        let days = min(dates.as_primitive_opt::<Date32Type>()?)?;
        Some(i64::from(days) * MICROS_PER_DAY)
    });
    (
        META_FIRST_EVENT_TIME,
        first.map(|t| t.to_string()).unwrap_or_default(),
    )
}

/// The earliest row a row file's header `metadata` names.
pub fn earliest_row(metadata: &BTreeMap<String, Vec<u8>>) -> EarliestRow {
    let Some(value) = metadata.get(META_FIRST_EVENT_TIME) else {
        return EarliestRow::Unknown;
    };
    match std::str::from_utf8(value).map(str::parse::<i64>) {
        _ if value.is_empty() => EarliestRow::Undated,
        Ok(Ok(micros)) => EarliestRow::At(micros),
        _ => EarliestRow::Unknown,
    }
}

/// Where `partition` resumes: after the greater of the table's `watermark` and
/// the `last` position of its newest staged file; `None` means from the start.
pub async fn resume_after(
    store: &dyn ObjectStore,
    partition: &PartitionId,
    watermark: Option<u64>,
) -> Result<Option<u64>> {
    let staged = match staged_files(store, partition).await?.last() {
        Some(newest) => Some(last_position_of(store, &newest.path).await?),
        None => None,
    };
    Ok(watermark.max(staged))
}

/// Records the source positions (metadata keys under
/// [`META_SOURCE_PREFIX`]) of `partition`'s row file whose last position is
/// `last`, once its rows are committed to the table and before the file is
/// deleted. Does nothing for files without source positions. Older markers
/// of the partition are removed (best effort: only the newest counts).
pub async fn write_compacted_marker(
    store: &dyn ObjectStore,
    partition: &PartitionId,
    last: u64,
    metadata: &BTreeMap<String, Vec<u8>>,
) -> Result<()> {
    let source: BTreeMap<&str, String> = metadata
        .iter()
        .filter(|(k, _)| k.starts_with(META_SOURCE_PREFIX))
        .map(|(k, v)| (k.as_str(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    if source.is_empty() {
        return Ok(());
    }
    let path = partition.compacted_marker(last);
    let body = serde_json::json!({ "last_position": last, "source": source }).to_string();
    match store
        .put_opts(
            &path,
            PutPayload::from(body),
            PutOptions::from(PutMode::Create),
        )
        .await
    {
        Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => {}
        Err(e) => return Err(Error::store(&path, e)),
    }
    let dir = partition.compacted_dir();
    if let Ok(listed) = store.list(Some(&dir)).try_collect::<Vec<_>>().await {
        for meta in listed {
            let older = meta
                .location
                .filename()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|p| p < last);
            if older {
                let _ = store.delete(&meta.location).await;
            }
        }
    }
    Ok(())
}

/// The source positions recorded by [`write_compacted_marker`] for
/// `partition` at `last`, keyed like the row-file metadata; `None` when
/// there is no such marker.
pub async fn compacted_marker(
    store: &dyn ObjectStore,
    partition: &PartitionId,
    last: u64,
) -> Result<Option<BTreeMap<String, String>>> {
    let path = partition.compacted_marker(last);
    let bytes = match crate::read_object(store, &path).await {
        Ok(bytes) => bytes,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    #[derive(serde::Deserialize)]
    struct Marker {
        source: BTreeMap<String, String>,
    }
    let marker: Marker = serde_json::from_slice(&bytes).map_err(|e| Error::CorruptRowFile {
        path: path.to_string(),
        reason: format!("not a compacted marker: {e}"),
    })?;
    Ok(Some(marker.source))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rowfile::{self, Codec};
    use deltalake::arrow::array::{ArrayRef, Int64Array};
    use object_store::memory::InMemory;
    use std::sync::Arc;

    #[test]
    fn a_row_files_first_event_time_is_its_earliest_row() {
        use deltalake::arrow::array::{Date32Array, TimestampMicrosecondArray};
        let header = |times: Vec<Option<i64>>, days: Vec<Option<i32>>| {
            let times: ArrayRef =
                Arc::new(TimestampMicrosecondArray::from(times).with_timezone("UTC"));
            let dates: ArrayRef = Arc::new(Date32Array::from(days));
            let batch = RecordBatch::try_from_iter([("ts", times), ("date", dates)]).unwrap();
            let (key, value) = first_event_time_metadata(&batch, Some("ts"));
            BTreeMap::from([(key.to_string(), value.into_bytes())])
        };
        let earliest = header(vec![Some(7), None, Some(5)], vec![Some(0), None, Some(0)]);
        assert_eq!(earliest_row(&earliest), EarliestRow::At(5));
        // Without event times, midnight of the earliest date (day 2 here).
        let dated = header(vec![None, None], vec![Some(3), Some(2)]);
        assert_eq!(earliest_row(&dated), EarliestRow::At(2 * MICROS_PER_DAY));
        assert_eq!(
            earliest_row(&header(vec![None], vec![None])),
            EarliestRow::Undated
        );
        assert_eq!(earliest_row(&BTreeMap::new()), EarliestRow::Unknown);
    }

    fn file(first: u64, last: u64) -> Bytes {
        let positions: ArrayRef = Arc::new(Int64Array::from(vec![first as i64]));
        let batch = RecordBatch::try_from_iter([("_position", positions)]).unwrap();
        let metadata = [
            (META_FIRST_POSITION, first.to_string()),
            (META_LAST_POSITION, last.to_string()),
        ];
        rowfile::write(&batch, Codec::Zstd, metadata).unwrap()
    }

    #[tokio::test]
    async fn compacted_markers_keep_the_newest_source_position() {
        let store = InMemory::new();
        let p = PartitionId::new("s", "shard-1");
        let source = |seq: &str| {
            BTreeMap::from([
                (META_LAST_POSITION.to_string(), b"1".to_vec()),
                (
                    format!("{META_SOURCE_PREFIX}last_sequence"),
                    seq.as_bytes().to_vec(),
                ),
            ])
        };
        // Files without source positions need no marker.
        write_compacted_marker(&store, &p, 5, &BTreeMap::new())
            .await
            .unwrap();
        assert_eq!(compacted_marker(&store, &p, 5).await.unwrap(), None);
        write_compacted_marker(&store, &p, 10, &source("111"))
            .await
            .unwrap();
        write_compacted_marker(&store, &p, 20, &source("222"))
            .await
            .unwrap();
        let marker = compacted_marker(&store, &p, 20).await.unwrap().unwrap();
        assert_eq!(
            marker,
            BTreeMap::from([(
                format!("{META_SOURCE_PREFIX}last_sequence"),
                "222".to_string()
            )])
        );
        // The older marker is gone; the chain's own metadata is not copied.
        assert_eq!(compacted_marker(&store, &p, 10).await.unwrap(), None);
    }

    #[tokio::test]
    async fn clash_reports_existing_last_and_resume_takes_the_max() {
        let store = InMemory::new();
        let p = PartitionId::new("s", "p");
        assert_eq!(resume_after(&store, &p, None).await.unwrap(), None);
        assert_eq!(
            stage(&store, &p, 0, file(0, 99)).await.unwrap(),
            StageOutcome::Staged
        );
        // A zombie re-reading from 0 with a different batch extent loses.
        assert_eq!(
            stage(&store, &p, 0, file(0, 50)).await.unwrap(),
            StageOutcome::AlreadyStaged { existing_last: 99 }
        );
        assert_eq!(
            stage(&store, &p, 100, file(100, 180)).await.unwrap(),
            StageOutcome::Staged
        );
        assert_eq!(resume_after(&store, &p, None).await.unwrap(), Some(180));
        assert_eq!(
            resume_after(&store, &p, Some(500)).await.unwrap(),
            Some(500)
        );
        let firsts: Vec<u64> = staged_files(&store, &p)
            .await
            .unwrap()
            .iter()
            .map(|f| f.first)
            .collect();
        assert_eq!(firsts, vec![0, 100]);
        assert_eq!(staged_partitions(&store).await.unwrap(), vec![p]);
    }

    #[tokio::test]
    async fn dead_letters_of_another_extent_are_kept_beside_the_first() {
        use crate::dead_letter::{self, DeadLetter, Reason};
        let store = InMemory::new();
        let p = PartitionId::new("s", "p");
        let letters = |at: u64| {
            let letter = DeadLetter::new(at, Reason::Framing, "bad", b"x", 10);
            dead_letter::encode(&p, 0, at, &[letter], Codec::Zstd).unwrap()
        };
        // The first writer; the same batch again (a retry) changes nothing.
        stage_dead_letters(&store, &p, 0, 50, letters(50))
            .await
            .unwrap();
        stage_dead_letters(&store, &p, 0, 50, letters(50))
            .await
            .unwrap();
        // Another writer from the same first position with another extent.
        stage_dead_letters(&store, &p, 0, 99, letters(99))
            .await
            .unwrap();
        let names: Vec<String> = store
            .list(None)
            .map_ok(|m| m.location.filename().unwrap().to_string())
            .try_collect()
            .await
            .unwrap();
        let first = crate::layout::position_name(0);
        let last = crate::layout::position_name(99);
        assert_eq!(
            names,
            vec![format!("{first}-{last}.avro"), format!("{first}.avro")]
        );
        let kept = crate::read_object(&store, &p.dead_letter_file(0))
            .await
            .unwrap();
        let (_, metadata) = RowFile::read_header(&kept, "kept").unwrap();
        assert_eq!(last_position(&metadata, "kept").unwrap(), 50);
    }
}
