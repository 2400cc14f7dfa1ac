//! One conformance suite of Tributary's storage operations, run against every
//! store a lake can live on: a local directory, and S3 (the moto server that
//! scripts/test.sh starts and names in `TRIBUTARY_S3_ENDPOINT`, with test
//! credentials in `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::io::{Read, Write};

use bytes::Bytes;
use object_store::{ObjectStoreExt, PutMode, PutOptions, UpdateVersion};
use std::sync::Arc;
use tributary_config::{LakeConfig, S3Config};
use tributary_lake::chain::{self, StageOutcome};

use deltalake::arrow::array::{ArrayRef, Int64Array};
use deltalake::arrow::record_batch::RecordBatch;
use tributary_lake::rowfile::{self, Codec};
use tributary_lake::{Lake, PartitionId};

/// A row file of `partition` covering `first..=last`.
fn row_file(partition: &PartitionId, first: u64, last: u64) -> Bytes {
    let positions: ArrayRef = Arc::new(Int64Array::from(vec![first as i64]));
    let batch = RecordBatch::try_from_iter([("_position", positions)]).unwrap();
    let metadata = chain::file_metadata(partition, first, last);
    rowfile::write(&batch, Codec::Zstd, metadata).unwrap()
}

/// Create-only staging, listing in position order, resume, delete.
async fn stage_list_resume_delete(lake: &Lake) {
    let store = lake.store().as_ref();
    lake.check_reachable().await.unwrap();
    let p = PartitionId::new("conformance", "part-1");
    assert_eq!(chain::resume_after(store, &p, None).await.unwrap(), None);

    let staged = chain::stage(store, &p, 0, row_file(&p, 0, 99))
        .await
        .unwrap();
    assert_eq!(staged, StageOutcome::Staged);
    // Create-only: a second writer of the same first position loses and
    // learns where the existing file ends.
    let again = chain::stage(store, &p, 0, row_file(&p, 0, 50))
        .await
        .unwrap();
    assert_eq!(again, StageOutcome::AlreadyStaged { existing_last: 99 });

    // Positions whose text order differs from their numeric order.
    for first in [1_000_000, 100, 20_000, 9_999] {
        let outcome = chain::stage(store, &p, first, row_file(&p, first, first + 9))
            .await
            .unwrap();
        assert_eq!(outcome, StageOutcome::Staged);
    }
    let listed = chain::staged_files(store, &p).await.unwrap();
    let firsts: Vec<u64> = listed.iter().map(|f| f.first).collect();
    assert_eq!(firsts, [0, 100, 9_999, 20_000, 1_000_000]);
    assert!(listed.iter().all(|f| f.size > 0));
    assert_eq!(
        chain::staged_partitions(store).await.unwrap(),
        vec![p.clone()]
    );
    assert_eq!(
        chain::resume_after(store, &p, Some(5)).await.unwrap(),
        Some(1_000_009)
    );

    store.delete(&listed[0].path).await.unwrap();
    let firsts: Vec<u64> = chain::staged_files(store, &p)
        .await
        .unwrap()
        .iter()
        .map(|f| f.first)
        .collect();
    assert_eq!(firsts, [100, 9_999, 20_000, 1_000_000]);
}

/// A lake in a new local directory (kept while the guard lives).
fn local_lake() -> (tempfile::TempDir, Lake) {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(&LakeConfig {
        table_uri: dir.path().join("table").display().to_string(),
        s3: S3Config::default(),
        subject_columns: Vec::new(),
        ..LakeConfig::new("")
    })
    .unwrap();
    (dir, lake)
}

#[tokio::test]
async fn local_directory_store() {
    let (_dir, lake) = local_lake();
    stage_list_resume_delete(&lake).await;
}

/// Creates `bucket` on the test S3 server (moto accepts unsigned requests).
fn create_bucket(endpoint: &str, bucket: &str) {
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(
        stream,
        "PUT /{bucket} HTTP/1.0\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200"),
        "{response}"
    );
}

fn s3_lake(name: &str) -> Lake {
    let endpoint = std::env::var("TRIBUTARY_S3_ENDPOINT")
        .expect("TRIBUTARY_S3_ENDPOINT is not set: run scripts/test.sh, which starts moto server");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let bucket = format!("{name}-{nanos}");
    create_bucket(&endpoint, &bucket);
    Lake::open(&LakeConfig {
        table_uri: format!("s3://{bucket}/tables/conformance"),
        s3: S3Config {
            region: Some("us-east-1".into()),
            endpoint: Some(endpoint),
            allow_http: true,
            path_style: true,
            ..S3Config::default()
        },
        ..LakeConfig::new("")
    })
    .unwrap()
}

#[tokio::test]
async fn s3_store() {
    stage_list_resume_delete(&s3_lake("conformance")).await;
}

/// Compare-and-swap on an object's version (If-Match on S3, the local
/// store's conditional update), which leases and the rewrites of row files
/// in place (forget, retention) build on: a stale version loses, and an
/// object deleted since it was read is not recreated.
async fn conditional_update(lake: &Lake) {
    let store = lake.store();
    let path = object_store::path::Path::from("_tributary/leases/example");
    let first = store
        .put_opts(&path, "v1".into(), PutMode::Create.into())
        .await
        .unwrap();
    let update = |version: &object_store::PutResult, body: &'static str| {
        let mode = PutMode::Update(UpdateVersion {
            e_tag: version.e_tag.clone(),
            version: version.version.clone(),
        });
        store.put_opts(&path, body.into(), PutOptions::from(mode))
    };
    let second = update(&first, "v2").await.unwrap();
    // A writer holding the old version loses.
    let stale = update(&first, "v3").await.unwrap_err();
    assert!(
        matches!(stale, object_store::Error::Precondition { .. }),
        "{stale:?}"
    );
    let fourth = update(&second, "v4").await.unwrap();
    let body = store.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(body.as_ref(), b"v4");
    // The version read by `get` is the one an update is conditional on.
    let read = store.get(&path).await.unwrap().meta;
    assert_eq!(read.e_tag, fourth.e_tag);

    // Deleted since it was read: the update fails and creates nothing.
    store.delete(&path).await.unwrap();
    let gone = update(&fourth, "v5").await.unwrap_err();
    assert!(
        matches!(gone, object_store::Error::Precondition { .. }),
        "{gone:?}"
    );
    let head = store.head(&path).await.unwrap_err();
    assert!(
        matches!(head, object_store::Error::NotFound { .. }),
        "recreated: {head:?}"
    );
    let listed: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(
        store.list(Some(&object_store::path::Path::from("_tributary"))),
    )
    .await
    .unwrap();
    assert!(listed.is_empty(), "{listed:?}");
}

#[tokio::test]
async fn s3_conditional_update() {
    conditional_update(&s3_lake("conditional")).await;
}

#[tokio::test]
async fn local_conditional_update() {
    let (_dir, lake) = local_lake();
    conditional_update(&lake).await;
}
