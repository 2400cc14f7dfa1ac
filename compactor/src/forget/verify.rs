//! Verification: the objects under the table that could still hold an
//! identifier read, and what still holds one found (and, for data files the
//! table no longer references, deleted after the grace period).
//!
//! A table data file is not read when the request's planning ruled it out
//! (statistics or bloom filters of the subject and key columns exclude every
//! identifier; [`proven_clean`]) and the table still references it. Everything
//! else is read in full: files the rewrite wrote, files the planning read,
//! files committed since the planning (a concurrent compaction's), files the
//! table no longer references, checkpoints, and every object that is not
//! Parquet (log entries, staged row files, dead letters, requests).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use deltalake::arrow::record_batch::RecordBatch;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt};
use tributary_lake::Lake;
use tributary_lake::rowfile::RowFile;

use super::requests::read_object;
use super::{Matcher, Residue, Verification};
use crate::error::{Error, Result};
use crate::files::TableFile;
use crate::optimize::MIN_ORPHAN_AGE;
use crate::partition::TablePartition;
use crate::progress::Progress;
use crate::rewrite::Pruned;
use crate::table::{delta_error, referenced_files};

/// What the planning of a request proved: the table files it ruled out for
/// every identifier of the request, and why.
pub(super) type Planned = HashMap<Path, Pruned>;

/// Why `meta` need not be read, or `None` when it must be: only a data file
/// that the table references now (`active`) and that the planning ruled out
/// is proven clean, by the planning's reason. Data files are immutable, so a
/// proof about a path holds for as long as the path exists; a file
/// committed after the planning has no proof and is read.
pub(super) fn proven_clean(
    meta: &ObjectMeta,
    active: &HashSet<Path>,
    planned: &Planned,
) -> Option<Pruned> {
    if !active.contains(&meta.location) {
        return None;
    }
    planned.get(&meta.location).copied()
}

/// An object that still holds an identifier, as [`verify`] found it.
#[derive(Debug)]
pub(super) struct Found {
    /// The object.
    pub(super) meta: ObjectMeta,
    /// For each request of the batch (`requests` of [`verify`]), whether it
    /// holds one of that request's identifiers; empty without `requests`.
    pub(super) held_by: Vec<bool>,
}

/// Reads every object under the table that is not proven clean
/// ([`proven_clean`]) and lists those that still hold an identifier: Parquet
/// files (data and checkpoints) value by value, row files value by value and
/// payload bytes, everything else (log JSON, requests, leases) as text.
///
/// `matcher` holds every identifier of the pass. With `requests` (a batch
/// of several), an object is also searched for each request's own
/// identifiers, in the same read, wherever `matcher` finds one (a Parquet
/// file batch by batch), so that each object is read once per pass.
pub(super) async fn verify(
    lake: &Lake,
    matcher: &Matcher,
    requests: &[Matcher],
    planned: &Planned,
) -> Result<(Verification, Vec<Found>)> {
    let active = referenced_files(lake).await?;
    let objects: Vec<_> = lake
        .store()
        .list(None)
        .try_collect()
        .await
        .map_err(|e| tributary_lake::Error::store(&Path::from(""), e))?;
    let mut verification = Verification::default();
    let mut to_read = Vec::new();
    for meta in objects {
        match proven_clean(&meta, &active, planned) {
            Some(reason) => verification.count_proven_clean(reason, meta.size),
            None => to_read.push(meta),
        }
    }
    // Objects are read concurrently, each on a runtime worker, so decoding
    // uses every core.
    let total = to_read.len() as u64;
    let matcher = Arc::new(matcher.clone());
    let requests: Arc<[Matcher]> = requests.into();
    let parallelism = std::thread::available_parallelism().map_or(2, |n| n.get() * 2);
    let mut checked = futures::stream::iter(to_read)
        .map(|meta| {
            let (lake, matcher, requests) = (lake.clone(), matcher.clone(), requests.clone());
            tokio::spawn(async move {
                let found = object_holds(&lake, &meta, &matcher, &requests).await?;
                Ok::<_, Error>(found.map(|found| (meta, found)))
            })
        })
        .buffer_unordered(parallelism);
    let mut found_in = Vec::new();
    let mut progress = Progress::new("objects verified", total);
    while let Some(result) = checked.next().await {
        progress.step();
        let Some((meta, Holding { columns, held_by })) = result.map_err(Error::Worker)?? else {
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
            found_in.push(Found { meta, held_by });
        }
    }
    verification.objects_with_matches.sort();
    verification.residue.sort();
    Ok((verification, found_in))
}

/// What an object holds.
#[derive(Debug, Default)]
pub(super) struct Holding {
    /// The columns that hold an identifier (one empty name for an object
    /// that is not rows: log JSON, requests).
    pub(super) columns: Vec<String>,
    /// Per request, whether the object holds one of its identifiers (only
    /// searched where `columns` is not empty).
    pub(super) held_by: Vec<bool>,
}

impl Holding {
    /// Adds what `matcher` found in `batch`, and, when it found something,
    /// which `requests` it belongs to.
    fn add_batch(&mut self, batch: &RecordBatch, matcher: &Matcher, requests: &[Matcher]) {
        let columns = matcher.columns_holding(batch, &[]);
        if columns.is_empty() {
            return;
        }
        self.columns.extend(columns);
        self.held_by.resize(requests.len(), false);
        for (held, request) in self.held_by.iter_mut().zip(requests) {
            *held = *held || !request.columns_holding(batch, &[]).is_empty();
        }
    }

    fn finish(mut self) -> Holding {
        self.columns.sort();
        self.columns.dedup();
        self
    }
}

/// What the object holds of `matcher`'s identifiers, and of each of
/// `requests`' (see [`Holding`]), from one read; `None` when it is gone.
pub(super) async fn object_holds(
    lake: &Lake,
    meta: &ObjectMeta,
    matcher: &Matcher,
    requests: &[Matcher],
) -> Result<Option<Holding>> {
    let name = meta.location.as_ref();
    if name.ends_with(".parquet") {
        return parquet_holds(lake, &meta.location, meta.size, matcher, requests)
            .await
            .map(Some);
    }
    let bytes = match read_object(lake, &meta.location).await {
        Ok(bytes) => bytes,
        Err(Error::Lake(e)) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut holding = Holding::default();
    if name.ends_with(".avro") {
        let file = RowFile::read(&bytes, name)?;
        holding.add_batch(&file.batch, matcher, requests);
    } else if matcher.object_holds(&bytes) {
        holding.columns.push(String::new());
        holding.held_by = requests.iter().map(|r| r.object_holds(&bytes)).collect();
    }
    Ok(Some(holding.finish()))
}

/// Deletes data files that hold a match but that the table no longer
/// references: files another operation (optimize, a tombstone delete,
/// another request) removed more than `grace` ago, and files no commit ever
/// referenced (a crashed writer's output) older than [`MIN_ORPHAN_AGE`] —
/// younger ones may be a running writer's output about to be committed.
/// Returns the paths deleted.
pub(super) async fn delete_unreferenced_matches(
    lake: &Lake,
    found: impl IntoIterator<Item = ObjectMeta>,
    grace: Duration,
) -> Result<Vec<String>> {
    let data_files: Vec<ObjectMeta> = found
        .into_iter()
        .filter(|m| {
            m.location.as_ref().ends_with(".parquet")
                && !m.location.as_ref().starts_with("_delta_log/")
        })
        .collect();
    let Some(table) = lake.load_table().await? else {
        return Ok(Vec::new());
    };
    if data_files.is_empty() {
        return Ok(Vec::new());
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
    let removed_at: HashMap<Path, i64> = tombstones
        .iter()
        .map(|t| {
            (
                Path::from(t.path().as_ref()),
                t.deletion_timestamp().unwrap_or(0),
            )
        })
        .collect();
    let now = chrono::Utc::now();
    let mut deleted = Vec::new();
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
        deleted.push(path.to_string());
    }
    Ok(deleted)
}

async fn parquet_holds(
    lake: &Lake,
    path: &Path,
    size: u64,
    matcher: &Matcher,
    requests: &[Matcher],
) -> Result<Holding> {
    let file = match TableFile::open(lake, path.clone(), size).await {
        Ok(file) => file,
        Err(Error::Parquet { .. }) if !lake_has(lake, path).await? => {
            return Ok(Holding::default());
        }
        Err(e) => return Err(e),
    };
    let mut rows = file.rows(TablePartition::default())?;
    let mut holding = Holding::default();
    while let Some(batch) = rows.next().await? {
        holding.add_batch(&batch, matcher, requests);
    }
    Ok(holding.finish())
}

pub(super) async fn lake_has(lake: &Lake, path: &Path) -> Result<bool> {
    match lake.store().head(path).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(tributary_lake::Error::store(path, e).into()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use deltalake::arrow::array::{ArrayRef, Date32Array, Int64Array, StringArray};
    use deltalake::arrow::record_batch::RecordBatch;
    use tributary_config::{CompactConfig, LakeConfig};
    use tributary_lake::{Lake, PartitionId};

    use super::*;
    use crate::forget::{ForgetInput, erasures, matcher_of};
    use crate::rewrite::{Erasure, RewriteReport, candidates};

    /// Stages rows `first..first + users.len()` (one per user) and compacts
    /// them: one more table file.
    async fn add_file(config: &CompactConfig, lake: &Lake, first: u64, users: &[&str]) {
        let partition = PartitionId::new("test", "p0");
        let keys = (first..).take(users.len()).map(|n| format!("k{n}"));
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("_key", Arc::new(StringArray::from_iter_values(keys))),
            (
                "date",
                Arc::new(Date32Array::from(vec![20_787; users.len()])),
            ),
            ("user_id", Arc::new(StringArray::from_iter_values(users))),
            (
                "ts",
                Arc::new(Int64Array::from(vec![1_795_000_000_000; users.len()])),
            ),
        ];
        crate::testing::stage(lake, &partition, first, columns).await;
        crate::compact_until_empty(config, lake).await.unwrap();
    }

    fn meta(path: &str) -> ObjectMeta {
        ObjectMeta {
            location: Path::from(path),
            last_modified: chrono::Utc::now(),
            size: 1,
            e_tag: None,
            version: None,
        }
    }

    #[test]
    fn only_a_planned_file_the_table_still_references_is_proven_clean() {
        let planned: Planned = [
            (Path::from("a.parquet"), Pruned::Statistics),
            (Path::from("b.parquet"), Pruned::BloomFilter),
        ]
        .into_iter()
        .collect();
        let active: HashSet<Path> = ["a.parquet", "b.parquet", "new.parquet"]
            .into_iter()
            .map(Path::from)
            .collect();
        let clean = |path| proven_clean(&meta(path), &active, &planned);
        assert_eq!(clean("a.parquet"), Some(Pruned::Statistics));
        assert_eq!(clean("b.parquet"), Some(Pruned::BloomFilter));
        // Committed after the planning: never planned, so read.
        assert_eq!(clean("new.parquet"), None);
        // Planned, but removed from the table since: read.
        let active: HashSet<Path> = [Path::from("b.parquet")].into_iter().collect();
        assert_eq!(proven_clean(&meta("a.parquet"), &active, &planned), None);
        assert_eq!(
            proven_clean(
                &meta("_delta_log/00000000000000000001.json"),
                &active,
                &planned
            ),
            None
        );
    }

    /// One read tells every request of a batch apart: only the requests
    /// whose own identifiers a batch holds claim the object.
    #[test]
    fn one_read_attributes_an_object_to_the_requests_it_holds() {
        let matcher = |ids: &[&str]| {
            Matcher::new(ids.iter().map(|s| s.to_string()), std::iter::empty()).unwrap()
        };
        let all = matcher(&["u-1", "u-2", "u-3"]);
        let requests = [matcher(&["u-1"]), matcher(&["u-2"]), matcher(&["u-3"])];
        let batch = |users: &[&str]| {
            RecordBatch::try_from_iter([(
                "user_id",
                Arc::new(StringArray::from(users.to_vec())) as ArrayRef,
            )])
            .unwrap()
        };
        let mut holding = Holding::default();
        holding.add_batch(&batch(&["a", "b"]), &all, &requests);
        assert!(
            holding.held_by.is_empty(),
            "nothing found, nothing searched"
        );
        holding.add_batch(&batch(&["u-3", "b"]), &all, &requests);
        holding.add_batch(&batch(&["mail to u-1"]), &all, &requests);
        let holding = holding.finish();
        assert_eq!(holding.columns, ["user_id"]);
        assert_eq!(holding.held_by, [true, false, true]);
    }

    /// A compaction that commits a file holding the subject between a
    /// request's planning and its verification: the planning's proofs cover
    /// the files it saw, the new file is read and its match found.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_committed_after_the_planning_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(&LakeConfig {
            table_uri: dir.path().join("table").display().to_string(),
            s3: Default::default(),
            subject_columns: vec!["user_id".into()],
            ..LakeConfig::new("")
        })
        .unwrap();
        let config = CompactConfig::default();
        add_file(&config, &lake, 0, &["u-1", "u-2"]).await;
        add_file(&config, &lake, 2, &["u-3", "u-4"]).await;

        let input = ForgetInput {
            subjects: vec!["late".into()],
            keys: vec![],
        };
        let matcher = matcher_of(&input).unwrap();
        let table = lake.load_table().await.unwrap().unwrap();
        let mut planning = RewriteReport::default();
        let found = candidates(
            table.snapshot().unwrap(),
            Erasure {
                rows: &erasures(&lake, &matcher),
                text: None,
            },
            &mut planning,
        );
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(planning.files_scanned, 2, "{planning:?}");
        assert_eq!(planning.pruned.len(), 2);
        let planned: Planned = planning.pruned.into_iter().collect();

        add_file(&config, &lake, 4, &["late", "u-5"]).await;
        let (verification, found) = verify(&lake, &matcher, &[], &planned).await.unwrap();
        assert_eq!(verification.proven_clean_by_statistics, 2);
        assert_eq!(verification.proven_clean_by_bloom_filter, 0);
        let new_file = referenced_files(&lake)
            .await
            .unwrap()
            .into_iter()
            .find(|p| !planned.contains_key(p))
            .unwrap();
        assert!(
            verification
                .objects_with_matches
                .contains(&new_file.to_string()),
            "{verification:?}"
        );
        assert_eq!(found.len(), verification.objects_with_matches.len());
    }
}
