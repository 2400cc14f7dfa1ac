//! Rewrites of one row file at the same moment — forget and retention, two
//! forget runs, a rewrite and a compaction's (or a dead-letter replay's)
//! delete — on the test S3 server (moto) and a local directory. A rewrite is
//! conditional on the version it read, so neither edit undoes the other and
//! a deleted file is not recreated. Driven deterministically: the first
//! writer reads, the other writes in between, then the first tries its
//! write. Without conditional writes the first writer's put would bring back
//! what the other erased, or recreate the deleted file.

use std::path::Path as FsPath;
use std::sync::Arc;

use deltalake::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, StringArray};
use deltalake::arrow::compute::filter_record_batch;
use deltalake::arrow::record_batch::RecordBatch;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use tributary_compactor::row_files::{self, Edit, ReadRowFile, Updated};
use tributary_config::{LakeConfig, S3Config};
use tributary_lake::rowfile::{self, Codec};
use tributary_lake::{Lake, PartitionId, chain};

fn local_lake(dir: &FsPath) -> Lake {
    Lake::open(&LakeConfig {
        table_uri: dir.join("table").display().to_string(),
        ..LakeConfig::new("")
    })
    .unwrap()
}

fn s3_lake(name: &str) -> Lake {
    let table = crate::s3::new_table(name);
    Lake::open(&LakeConfig {
        table_uri: table.display().to_string(),
        s3: S3Config {
            region: Some("us-east-1".into()),
            endpoint: Some(crate::s3::endpoint()),
            allow_http: true,
            path_style: true,
            ..S3Config::default()
        },
        ..LakeConfig::new("")
    })
    .unwrap()
}

/// Stages a row file of one row per user (positions 0, 1, …).
async fn stage(lake: &Lake, users: &[&str]) -> Path {
    let partition = PartitionId::new("races", "p0");
    let last = users.len() as u64 - 1;
    let batch = RecordBatch::try_from_iter([
        (
            "_position",
            Arc::new(Int64Array::from_iter_values(0..users.len() as i64)) as ArrayRef,
        ),
        (
            "user_id",
            Arc::new(StringArray::from(users.to_vec())) as ArrayRef,
        ),
    ])
    .unwrap();
    let body = rowfile::write(
        &batch,
        Codec::Zstd,
        chain::file_metadata(&partition, 0, last),
    )
    .unwrap();
    chain::stage(lake.store().as_ref(), &partition, 0, body)
        .await
        .unwrap();
    chain::staged_files(lake.store().as_ref(), &partition)
        .await
        .unwrap()
        .remove(0)
        .path
}

/// The users of a read row file.
fn users(read: &ReadRowFile) -> Vec<String> {
    let column = read.file.batch.column_by_name("user_id").unwrap();
    let column = column.as_string::<i32>();
    (0..column.len())
        .map(|i| column.value(i).to_string())
        .collect()
}

/// An erasure of `user`: the rows without it, and how many it removed.
fn without(read: &ReadRowFile, user: &str) -> (Edit, usize) {
    let keep: BooleanArray = users(read).iter().map(|u| Some(u != user)).collect();
    let removed = keep.false_count();
    if removed == 0 {
        return (Edit::Keep, 0);
    }
    let rows = filter_record_batch(&read.file.batch, &keep).unwrap();
    (Edit::Write(rows), removed)
}

/// Runs `other` to completion from inside a rewrite's edit (between its
/// read and its write).
fn meanwhile<F: std::future::Future>(other: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(other))
}

/// Retention erases `a` from a file; while it computes its version, forget
/// rewrites the file without `b`. Retention's write loses, reads forget's
/// version and erases `a` from it: both erasures hold.
async fn concurrent_rewrites_keep_both_edits(lake: &Lake) {
    let path = stage(lake, &["a", "b", "c"]).await;
    let mut attempts = 0;
    let retention = row_files::update(lake, &path, false, |read| {
        attempts += 1;
        if attempts == 1 {
            let forget = meanwhile(row_files::update(lake, &path, false, |read| {
                Ok(without(read, "b"))
            }));
            assert!(
                matches!(forget.unwrap(), Updated::Edited(1)),
                "forget's rewrite"
            );
        }
        Ok(without(read, "a"))
    })
    .await
    .unwrap();
    assert_eq!(attempts, 2, "retention's edit computed again after losing");
    assert!(matches!(retention, Updated::Edited(1)), "{retention:?}");
    let left = row_files::read(lake, &path).await.unwrap().unwrap();
    assert_eq!(users(&left), ["c"], "an erasure was undone");
    // The file metadata (the position chain's) is kept.
    assert_eq!(
        left.file.metadata.get(chain::META_LAST_POSITION).unwrap(),
        b"2"
    );
}

/// A rewrite reads a file; meanwhile a compaction (or a replay) deletes it.
/// The rewrite leaves it deleted.
async fn a_deleted_file_is_not_recreated(lake: &Lake) {
    let path = stage(lake, &["a", "b"]).await;
    let rewrite = row_files::update(lake, &path, false, |read| {
        meanwhile(lake.store().delete(&path)).unwrap();
        Ok(without(read, "a"))
    })
    .await
    .unwrap();
    assert!(matches!(rewrite, Updated::Gone), "{rewrite:?}");
    let head = lake.store().head(&path).await.unwrap_err();
    assert!(
        matches!(head, object_store::Error::NotFound { .. }),
        "recreated: {head:?}"
    );
    assert!(
        row_files::list(lake, "staging").await.unwrap().is_empty(),
        "a temporary file is listed"
    );
}

/// A writer that never stops changing the file: the rewrite gives up after
/// its attempts with an error that names the file, and writes nothing.
async fn endless_contention_is_an_error(lake: &Lake) {
    let path = stage(lake, &["a", "b"]).await;
    let other = row_files::read(lake, &path).await.unwrap().unwrap();
    let mut n = 0;
    let error = row_files::update(lake, &path, false, |read| {
        n += 1;
        // Another body each time (S3's e-tag is the body's MD5: the same
        // bytes again are the same version).
        let body = rowfile::write(&other.file.batch, Codec::Zstd, [("n", n.to_string())]).unwrap();
        meanwhile(lake.store().put(&path, PutPayload::from(body))).unwrap();
        Ok(without(read, "a"))
    })
    .await
    .unwrap_err();
    assert_eq!(n, row_files::ATTEMPTS);
    assert!(error.to_string().contains(path.as_ref()), "{error}");
    let left = row_files::read(lake, &path).await.unwrap().unwrap();
    assert_eq!(users(&left), ["a", "b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_and_retention_rewrites_of_one_row_file_keep_both_edits_local() {
    let dir = tempfile::tempdir().unwrap();
    let lake = local_lake(dir.path());
    concurrent_rewrites_keep_both_edits(&lake).await;
    let dir = tempfile::tempdir().unwrap();
    let lake = local_lake(dir.path());
    a_deleted_file_is_not_recreated(&lake).await;
    let dir = tempfile::tempdir().unwrap();
    let lake = local_lake(dir.path());
    endless_contention_is_an_error(&lake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_and_retention_rewrites_of_one_row_file_keep_both_edits_s3() {
    concurrent_rewrites_keep_both_edits(&s3_lake("races")).await;
    a_deleted_file_is_not_recreated(&s3_lake("races-delete")).await;
    endless_contention_is_an_error(&s3_lake("races-busy")).await;
}
