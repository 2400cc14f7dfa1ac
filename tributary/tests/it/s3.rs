//! The lake on S3: the test S3 server is moto, started by scripts/test.sh,
//! which exports its address as `TRIBUTARY_S3_ENDPOINT` and test credentials
//! as `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::run_python;

/// The test S3 server's endpoint.
pub fn endpoint() -> String {
    std::env::var("TRIBUTARY_S3_ENDPOINT")
        .expect("TRIBUTARY_S3_ENDPOINT is not set: run scripts/test.sh, which starts moto server")
}

/// A table URI in a new, empty bucket of the test S3 server. It is a `Path`
/// only so that it fits the helpers that also take local directories.
pub fn new_table(name: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let bucket = format!("{name}-{nanos}");
    run_python(
        "import boto3, os, sys\n\
         boto3.client('s3', endpoint_url=os.environ['TRIBUTARY_S3_ENDPOINT']).create_bucket(Bucket=sys.argv[1])",
        &[&bucket],
    );
    PathBuf::from(format!("s3://{bucket}/tables/{name}"))
}

/// The `[lake.s3]` section for `table`, empty for a local table.
pub fn lake_section(table: &Path) -> String {
    if !table.to_str().unwrap().starts_with("s3://") {
        return String::new();
    }
    format!(
        "[lake.s3]\nendpoint = \"{}\"\nallow_http = true\npath_style = true\nregion = \"us-east-1\"\n",
        endpoint()
    )
}

/// Keys of every object under `prefix` of the table's bucket.
pub fn object_keys(table: &Path, prefix: &str) -> Vec<String> {
    let out = run_python(
        "import boto3, os, sys\n\
         bucket, root = sys.argv[1][len('s3://'):].split('/', 1)\n\
         s3 = boto3.client('s3', endpoint_url=os.environ['TRIBUTARY_S3_ENDPOINT'])\n\
         for page in s3.get_paginator('list_objects_v2').paginate(Bucket=bucket, Prefix=root + '/' + sys.argv[2]):\n\
         \x20   for o in page.get('Contents', []):\n\
         \x20       print(o['Key'])",
        &[table.to_str().unwrap(), prefix],
    );
    out.lines().map(str::to_string).collect()
}

/// The pipeline test on S3: the same checks, and nothing is left staged.
#[test]
fn ingest_and_compact_on_s3_read_by_python_deltalake() {
    let dir = tempfile::tempdir().unwrap();
    let table = new_table("pipeline");
    let report = crate::pipeline::ingest_compact_and_read(dir.path(), &table);
    let compacted = report["files_compacted"].as_u64().unwrap();
    assert!(compacted > 10, "row files were staged on S3: {report}");
    assert_eq!(
        object_keys(&table, "_tributary/staging/"),
        Vec::<String>::new()
    );
}
