//! End-to-end tests of the `tributary` binary and its files, checked with
//! third-party readers (Python `deltalake`, `fastavro`). Run them with
//! `scripts/test.sh`, which installs those readers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failure

mod bad_input;
mod compaction;
mod crash;
mod dead_letter_replay;
mod events;
mod faults;
mod forget;
mod forget_batch;
mod forget_text;
mod kafka;
mod kafka_tls;
mod kinesis;
mod operations;
mod partitioning;
mod pipeline;
mod registry;
mod registry_formats;
mod registry_ingest;
mod retention;
mod routing;
mod row_file_races;
mod rowfile_fastavro;
mod s3;
mod scale_out;
mod tables;
mod typed;
mod upkeep;
mod upsert;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The Python interpreter with deltalake, pyarrow and fastavro.
pub fn python() -> PathBuf {
    let path = std::env::var_os("TRIBUTARY_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| Path::new(&h).join(".cache/tributary-testbed/venv/bin/python"))
        })
        .expect("TRIBUTARY_PYTHON or HOME must be set");
    assert!(
        path.exists(),
        "{} is missing: run scripts/test.sh, which installs it",
        path.display()
    );
    path
}

/// Runs a Python script with `args`; returns its stdout, failing on error.
///
/// The script ends with `os._exit(0)` after flushing: Python `deltalake` 1.6.6
/// sometimes aborts in interpreter teardown ("terminate called without an
/// active exception") after reading a table whose files predate a schema
/// change, although the data it returned is correct.
pub fn run_python(script: &str, args: &[&str]) -> String {
    let script =
        format!("{script}\nimport os as _os, sys as _sys\n_sys.stdout.flush()\n_os._exit(0)\n");
    let output = Command::new(python())
        .arg("-c")
        .arg(&script)
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "python failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        script
    );
    String::from_utf8(output.stdout).expect("python prints UTF-8")
}

/// The binary under test (`TRIBUTARY_TEST_BIN` when set: a copy that a
/// build in a shared target directory cannot replace mid-run). Its HTTP
/// endpoint listens on a free port unless a test sets
/// `TRIBUTARY_SERVICE__LISTEN_ADDR` itself, so that processes of tests
/// running side by side never clash.
pub fn tributary() -> Command {
    let binary = std::env::var_os("TRIBUTARY_TEST_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_tributary").into());
    let mut cmd = Command::new(binary);
    cmd.env("TRIBUTARY_LOG", "warn")
        .env("TRIBUTARY_SERVICE__LISTEN_ADDR", "127.0.0.1:0");
    cmd
}

/// Runs the binary to completion, asserting success.
pub fn run_ok(args: &[&str]) -> Output {
    let output = tributary().args(args).output().expect("tributary runs");
    assert!(
        output.status.success(),
        "tributary {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Writes a configuration for a files source in `input` and a table in `table`
/// (a directory, or an `s3://` URI on the test S3 server: see [`s3::lake`]).
pub fn write_config(dir: &Path, input: &Path, table: &Path, extra: &str) -> PathBuf {
    let path = dir.join("tributary.toml");
    let mut f = std::fs::File::create(&path).unwrap();
    write!(
        f,
        r#"
[lake]
table_uri = "{}"

[ingest]
stream = "test"

[ingest.files]
path = "{}"
poll_interval_ms = 50
gz_settle_ms = 200

[ingest.flatten]
explode = "messages"
key_field = "messages_id"
event_time_field = "messages_ts"
{s3}
{extra}
"#,
        table.display(),
        input.display(),
        s3 = s3::lake_section(table),
    )
    .unwrap();
    path
}

/// Test data: envelopes of 1–9 messages with unique ids `r<n>` and a numeric
/// field `n` equal to the record number. Returns the ids.
pub fn write_records(path: &Path, first: u64, records: u64, gz: bool) -> Vec<String> {
    let file = std::fs::File::create(path).unwrap();
    let mut out: Box<dyn Write> = if gz {
        Box::new(flate2::write::GzEncoder::new(
            file,
            flate2::Compression::fast(),
        ))
    } else {
        Box::new(std::io::BufWriter::new(file))
    };
    let (lines, ids) = envelopes(first, records);
    for line in lines {
        writeln!(out, "{line}").unwrap();
    }
    out.flush().unwrap();
    drop(out);
    ids
}

/// Records `first..first + records` as envelope lines (without newlines),
/// and their ids; see [`write_records`].
pub fn envelopes(first: u64, records: u64) -> (Vec<String>, Vec<String>) {
    let (mut lines, mut ids) = (Vec::new(), Vec::new());
    let mut n = first;
    let end = first + records;
    while n < end {
        let count = (1 + n % 9).min(end - n);
        let messages: Vec<String> = (n..n + count)
            .map(|i| {
                ids.push(format!("r{i}"));
                format!(
                    r#"{{"id":"r{i}","n":{i},"ts":{},"tags":["t{}"]}}"#,
                    1_795_478_400_000 + i * 1_000_000,
                    i % 3
                )
            })
            .collect();
        lines.push(format!(
            r#"{{"host":"h{}","messages":[{}]}}"#,
            n % 4,
            messages.join(",")
        ));
        n += count;
    }
    (lines, ids)
}

/// Every dead letter of stream `test` in the local table `table`, read with
/// `fastavro`: `(partition file, position, reason, error, payload bytes)`,
/// in that order.
pub fn dead_letters(table: &Path) -> Vec<(String, u64, String, String, u64)> {
    let dir = table.join("_tributary/dead-letter/test");
    if !dir.exists() {
        return Vec::new();
    }
    let script = r#"
import sys, os, json, fastavro
out = []
for root, _, files in os.walk(sys.argv[1]):
    for f in sorted(files):
        for r in fastavro.reader(open(os.path.join(root, f), 'rb')):
            out.append([os.path.basename(root), r['_position'], r['reason'], r['error'], r['payload_bytes']])
print(json.dumps(sorted(out)))
"#;
    serde_json::from_str(run_python(script, &[dir.to_str().unwrap()]).trim()).unwrap()
}

/// The `_key` column of the table at `table` (a directory or an `s3://`
/// URI on the test S3 server), via Python `deltalake`.
pub fn table_keys(table: &Path) -> Vec<String> {
    let out = run_python(
        &format!(
            "import sys, deltalake\n{S3_STORAGE_OPTIONS}\n\
             t = deltalake.DeltaTable(sys.argv[1], storage_options=storage_options(sys.argv[1]))\n\
             t = t.to_pyarrow_table(columns=['_key'])\n\
             print('\\n'.join(t.column('_key').to_pylist()))"
        ),
        &[table.to_str().unwrap()],
    );
    out.lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Python: `storage_options(uri)` for the Python `deltalake` package, reaching
/// `s3://` tables on the test S3 server like Tributary does.
pub const S3_STORAGE_OPTIONS: &str = r#"
def storage_options(uri):
    import os
    if not uri.startswith("s3://"):
        return None
    return {
        "AWS_ENDPOINT_URL": os.environ["TRIBUTARY_S3_ENDPOINT"],
        "AWS_ALLOW_HTTP": "true",
        "AWS_REGION": os.environ.get("AWS_REGION", "us-east-1"),
        "AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"],
        "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "false",
    }
"#;
