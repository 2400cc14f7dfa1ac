//! Verification: every object under the table read, and what still holds
//! an identifier found (and, for data files the table no longer references,
//! deleted after the grace period).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt};
use tributary_lake::Lake;
use tributary_lake::rowfile::RowFile;

use super::requests::read_object;
use super::{ForgetReport, Matcher, Residue, Verification};
use crate::error::{Error, Result};
use crate::files::TableFile;
use crate::optimize::MIN_ORPHAN_AGE;
use crate::partition::TablePartition;
use crate::progress::Progress;
use crate::table::delta_error;

/// Reads every object under the table and lists those that still hold an
/// identifier: Parquet files (data and checkpoints) value by value, row files
/// value by value and payload bytes, everything else (log JSON, requests,
/// leases) as text.
pub(super) async fn verify(
    lake: &Lake,
    matcher: &Matcher,
) -> Result<(Verification, Vec<ObjectMeta>)> {
    let objects: Vec<_> = lake
        .store()
        .list(None)
        .try_collect()
        .await
        .map_err(|e| tributary_lake::Error::store(&Path::from(""), e))?;
    // Objects are read concurrently, each on a runtime worker, so decoding
    // uses every core.
    let total = objects.len() as u64;
    let matcher = Arc::new(matcher.clone());
    let parallelism = std::thread::available_parallelism().map_or(2, |n| n.get() * 2);
    let mut checked = futures::stream::iter(objects)
        .map(|meta| {
            let (lake, matcher) = (lake.clone(), matcher.clone());
            tokio::spawn(async move {
                let found = object_holds(&lake, &meta, &matcher).await?;
                Ok::<_, Error>(found.map(|found| (meta, found)))
            })
        })
        .buffer_unordered(parallelism);
    let mut verification = Verification::default();
    let mut found_in = Vec::new();
    let mut progress = Progress::new("objects verified", total);
    while let Some(result) = checked.next().await {
        progress.step();
        let Some((meta, columns)) = result.map_err(Error::Worker)?? else {
            continue;
        };
        verification.objects_read += 1;
        verification.bytes_read += meta.size;
        if !columns.is_empty() {
            verification
                .objects_with_matches
                .push(meta.location.to_string());
            verification
                .residue
                .extend(columns.into_iter().map(|column| Residue {
                    object: meta.location.to_string(),
                    column,
                }));
            found_in.push(meta);
        }
    }
    verification.objects_with_matches.sort();
    verification.residue.sort();
    Ok((verification, found_in))
}

/// The columns of the object that hold an identifier (one empty name for an
/// object that is not rows: log JSON, requests); `None` when it is gone.
pub(super) async fn object_holds(
    lake: &Lake,
    meta: &ObjectMeta,
    matcher: &Matcher,
) -> Result<Option<Vec<String>>> {
    let name = meta.location.as_ref();
    if name.ends_with(".parquet") {
        return parquet_holds(lake, &meta.location, meta.size, matcher)
            .await
            .map(Some);
    }
    let bytes = match read_object(lake, &meta.location).await {
        Ok(bytes) => bytes,
        Err(Error::Lake(e)) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    if name.ends_with(".avro") {
        row_file_holds(&bytes, name, matcher).map(Some)
    } else {
        let found = matcher.object_holds(&bytes);
        Ok(Some(if found {
            vec![String::new()]
        } else {
            Vec::new()
        }))
    }
}

/// Deletes data files that hold a match but that the table no longer
/// references: files another operation (optimize, a tombstone delete,
/// another request) removed more than `grace` ago, and files no commit ever
/// referenced (a crashed writer's output) older than [`MIN_ORPHAN_AGE`] —
/// younger ones may be a running writer's output about to be committed.
/// What is left stays in the report's matches.
pub(super) async fn delete_unreferenced_matches(
    lake: &Lake,
    found: Vec<ObjectMeta>,
    grace: Duration,
    report: &mut ForgetReport,
) -> Result<()> {
    let data_files: Vec<ObjectMeta> = found
        .into_iter()
        .filter(|m| {
            m.location.as_ref().ends_with(".parquet")
                && !m.location.as_ref().starts_with("_delta_log/")
        })
        .collect();
    let Some(table) = lake.load_table().await? else {
        return Ok(());
    };
    if data_files.is_empty() {
        return Ok(());
    }
    let state = table.snapshot().map_err(|e| delta_error(lake, "read", e))?;
    let active: HashSet<Path> = state
        .log_data()
        .iter()
        .map(|f| f.object_store_path())
        .collect();
    let tombstones: Vec<_> = state
        .all_tombstones(table.log_store().as_ref())
        .try_collect()
        .await
        .map_err(|e| delta_error(lake, "read", e))?;
    let removed_at: std::collections::HashMap<Path, i64> = tombstones
        .iter()
        .map(|t| {
            (
                Path::from(t.path().as_ref()),
                t.deletion_timestamp().unwrap_or(0),
            )
        })
        .collect();
    let now = chrono::Utc::now();
    for meta in data_files {
        let path = meta.location;
        if active.contains(&path) {
            continue;
        }
        let deletable = match removed_at.get(&path) {
            Some(at) => at + (grace.as_millis() as i64) <= now.timestamp_millis(),
            None => (now - meta.last_modified)
                .to_std()
                .is_ok_and(|age| age >= MIN_ORPHAN_AGE),
        };
        if !deletable {
            continue;
        }
        match lake.store().delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(tributary_lake::Error::store(&path, e).into()),
        }
        report.objects_deleted += 1;
        report
            .verification
            .objects_with_matches
            .retain(|name| name != path.as_ref());
    }
    Ok(())
}

/// The columns of a row file that hold an identifier.
pub(super) fn row_file_holds(bytes: &[u8], name: &str, matcher: &Matcher) -> Result<Vec<String>> {
    let file = RowFile::read(bytes, name)?;
    Ok(matcher.columns_holding(&file.batch, &[]))
}

pub(super) async fn parquet_holds(
    lake: &Lake,
    path: &Path,
    size: u64,
    matcher: &Matcher,
) -> Result<Vec<String>> {
    let file = match TableFile::open(lake, path.clone(), size).await {
        Ok(file) => file,
        Err(Error::Parquet { .. }) if !lake_has(lake, path).await? => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut rows = file.rows(TablePartition::default())?;
    let mut columns = std::collections::BTreeSet::new();
    while let Some(batch) = rows.next().await? {
        columns.extend(matcher.columns_holding(&batch, &[]));
    }
    Ok(columns.into_iter().collect())
}

pub(super) async fn lake_has(lake: &Lake, path: &Path) -> Result<bool> {
    match lake.store().head(path).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(tributary_lake::Error::store(path, e).into()),
    }
}
