//! The production compactor: sorted Parquet files with bloom filters and a
//! page index (checked with pyarrow), tombstone deletes, optimize, vacuum,
//! checkpoints, and two compactors with an optimize and an ingest on S3.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::operations::{Processes, wait_for};
use crate::{S3_STORAGE_OPTIONS, run_ok, run_python, s3, table_keys, tributary, write_config};

/// The subject column of the test records.
const SUBJECT: &str = "messages_user";

/// Records `first..first + count` as envelope lines of up to 5 messages, each
/// with a unique id `r<n>`, a user (the subject), an event time and `n`.
/// `op` sets the envelope's `_op` field (`"delete"` makes tombstones);
/// `n` replaces every `n` when given.
pub(crate) fn records(first: u64, count: u64, op: Option<&str>, n: Option<i64>) -> String {
    let mut lines = String::new();
    let ids: Vec<u64> = (first..first + count).collect();
    for chunk in ids.chunks(5) {
        let messages: Vec<String> = chunk
            .iter()
            .map(|i| {
                format!(
                    r#"{{"id":"r{i}","user":"u{:03}","ts":{},"n":{}}}"#,
                    i % 41,
                    1_795_478_400_000 + (i * 7_919 % 3_000) * 100_000,
                    n.unwrap_or(*i as i64)
                )
            })
            .collect();
        let op = op.map_or(String::new(), |o| format!(r#""_op":"{o}","#));
        lines.push_str(&format!(
            "{{{op}\"host\":\"h{}\",\"messages\":[{}]}}\n",
            chunk[0] % 3,
            messages.join(",")
        ));
    }
    lines
}

/// `r<first>..r<end>` as keys.
pub(crate) fn keys(range: std::ops::Range<u64>) -> Vec<String> {
    range.map(|i| format!("r{i}")).collect()
}

/// A configuration for `input` → `table` with the subject column and `extra`.
pub(crate) fn config(dir: &Path, table: &Path, extra: &str) -> (PathBuf, PathBuf) {
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    let path = write_config(dir, &input, table, extra);
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "[lake]\n",
        &format!("[lake]\nsubject_columns = [\"{SUBJECT}\"]\n"),
        1,
    );
    std::fs::write(&path, text).unwrap();
    (path, input)
}

pub(crate) fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Asserts the table holds exactly `expected` keys, each once.
pub(crate) fn assert_keys(table: &Path, expected: &[String]) {
    let mut got = table_keys(table);
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "duplicate keys in the table");
    let missing: Vec<&String> = expected
        .iter()
        .filter(|k| !unique.contains(k))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "keys missing from the table, e.g. {missing:?}"
    );
    got.sort();
    let mut expected = expected.to_vec();
    expected.sort();
    assert_eq!(got, expected);
}

/// What pyarrow sees in every data file of a local table: bloom filters,
/// page index, dictionary pages, sort order, partition values.
fn inspect_files(table: &Path) -> serde_json::Value {
    let out = run_python(
        &format!(
            r#"
import sys, json, os, deltalake, pyarrow.parquet as pq
root = sys.argv[1]
dt = deltalake.DeltaTable(root)
files = []
for uri in dt.file_uris():
    path = uri[len('file://'):] if uri.startswith('file://') else uri
    md = pq.ParquetFile(path).metadata
    names = [md.schema.column(i).name for i in range(md.num_columns)]
    blooms, indexed, dictionary, subject_dictionary = set(), True, True, False
    for g in range(md.num_row_groups):
        for i, name in enumerate(names):
            c = md.row_group(g).column(i)
            if c.bloom_filter_offset is not None and (c.bloom_filter_length or 0) > 0:
                blooms.add(name)
            indexed = indexed and c.has_column_index and c.has_offset_index
            if name == 'host':
                dictionary = dictionary and c.has_dictionary_page
            if name == '{SUBJECT}':
                subject_dictionary = subject_dictionary or c.has_dictionary_page
    t = pq.read_table(path)
    rows = list(zip(t.column('{SUBJECT}').to_pylist(), t.column('messages_ts').to_pylist(), t.column('_key').to_pylist()))
    files.append({{
        'partition': os.path.basename(os.path.dirname(path)),
        'rows': t.num_rows,
        'sorted': all(a <= b for a, b in zip(rows, rows[1:])),
        'blooms': sorted(blooms),
        'page_index': indexed,
        'dictionary': dictionary,
        'subject_dictionary': subject_dictionary,
        'compression': md.row_group(0).column(0).compression,
    }})
full = dt.to_pyarrow_table()
print(json.dumps({{'files': files, 'rows': full.num_rows,
  'dates': sorted(set(str(d) for d in full.column('date').to_pylist())),
  'columns': full.schema.names}}))
"#
        ),
        &[table.to_str().unwrap()],
    );
    serde_json::from_str(out.trim()).unwrap()
}

#[test]
fn compacted_files_are_sorted_with_bloom_filters_page_index_and_dictionary() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table");
    let (config, input) = config(dir.path(), &table, "[ingest.batch]\nmax_records = 900\n");
    let config = config.to_str().unwrap();
    std::fs::write(input.join("a.ndjson"), records(0, 12_000, None, None)).unwrap();
    run_ok(&["ingest", "--config", config, "--once"]);
    let report = json(&run_ok(&["compact", "--config", config, "--once"]));
    assert_eq!(report["rows_written"], 12_000, "{report}");

    let seen = inspect_files(&table);
    assert_eq!(seen["rows"], 12_000);
    let columns: Vec<&str> = seen["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for column in [
        "_key",
        "_partition",
        "_position",
        "date",
        "host",
        SUBJECT,
        "messages_ts",
        "messages_n",
    ] {
        assert!(
            columns.contains(&column),
            "{column} missing from {columns:?}"
        );
    }
    let files = seen["files"].as_array().unwrap();
    let dates = seen["dates"].as_array().unwrap();
    assert_eq!(
        files.len(),
        dates.len(),
        "one file per date partition: {seen}"
    );
    for file in files {
        assert_eq!(
            file["sorted"], true,
            "rows sorted by subject, event time, key: {file}"
        );
        assert_eq!(
            file["blooms"],
            serde_json::json!(["_key", SUBJECT]),
            "{file}"
        );
        assert_eq!(file["page_index"], true, "{file}");
        // A dictionary on a column of few values, none on the subject
        // column, whose values identify people.
        assert_eq!(file["dictionary"], true, "{file}");
        assert_eq!(file["subject_dictionary"], false, "{file}");
        assert_eq!(file["compression"], "ZSTD", "{file}");
        let partition = file["partition"].as_str().unwrap();
        assert!(
            dates
                .iter()
                .any(|d| partition == format!("date={}", d.as_str().unwrap())),
            "{partition} is a date partition of {dates:?}"
        );
    }
}

#[test]
fn tombstones_remove_keys_from_staged_rows_and_table_files() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table");
    let (config, input) = config(dir.path(), &table, "[ingest.batch]\nmax_records = 700\n");
    let config = config.to_str().unwrap();
    std::fs::write(input.join("a.ndjson"), records(0, 5_000, None, None)).unwrap();
    run_ok(&["ingest", "--config", config, "--once"]);
    run_ok(&["compact", "--config", config, "--once"]);

    // One later round: deletes of compacted keys, new keys, a new key deleted
    // in the same round, and a key sent twice (the later row wins).
    let mut later = records(10, 10, Some("delete"), None);
    later.push_str(&records(5_000, 100, None, None));
    later.push_str(&records(5_050, 10, Some("delete"), None));
    later.push_str(&records(5_000, 1, Some("upsert"), Some(-1)));
    std::fs::write(input.join("b.ndjson"), later).unwrap();
    run_ok(&["ingest", "--config", config, "--once"]);
    let report = json(&run_ok(&["compact", "--config", config, "--once"]));
    assert_eq!(report["tombstones"], 20, "{report}");
    assert_eq!(report["rows_deleted_from_table"], 10, "{report}");
    assert!(
        report["table_files_rewritten"].as_u64().unwrap() >= 1,
        "{report}"
    );
    assert_eq!(report["rows_written"], 90, "{report}");

    let expected: Vec<String> = keys(0..10)
        .into_iter()
        .chain(keys(20..5_050))
        .chain(keys(5_060..5_100))
        .collect();
    assert_keys(&table, &expected);
    let out = run_python(
        "import sys, json, deltalake\n\
         dt = deltalake.DeltaTable(sys.argv[1])\n\
         t = dt.to_pyarrow_table(columns=['_key', 'messages_n']).to_pydict()\n\
         n = dict(zip(t['_key'], t['messages_n']))\n\
         print(json.dumps({'r5000': n['r5000'], 'op': dt.history(1)[0]['operation']}))",
        &[table.to_str().unwrap()],
    );
    let got: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(got["r5000"], -1, "the later row of a key wins");
    assert_eq!(got["op"], "DELETE");
}

/// Data files of a local table on disk (referenced or not).
fn parquet_on_disk(table: &Path) -> usize {
    fn walk(dir: &Path, n: &mut usize) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if path.is_dir() && !name.starts_with('_') {
                walk(&path, n);
            } else if name.ends_with(".parquet") {
                *n += 1;
            }
        }
    }
    let mut n = 0;
    walk(table, &mut n);
    n
}

#[test]
fn optimize_merges_small_files_vacuum_deletes_them_and_checkpoints_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table");
    let extra = "[ingest.batch]\nmax_records = 100\n\n[compact]\nmax_files_per_commit = 1\ncheckpoint_interval = 5\n";
    let (config, input) = config(dir.path(), &table, extra);
    let config = config.to_str().unwrap();
    std::fs::write(input.join("a.ndjson"), records(0, 8_000, None, None)).unwrap();
    run_ok(&["ingest", "--config", config, "--once"]);
    let compacted = json(&run_ok(&["compact", "--config", config, "--once"]));
    assert!(compacted["commits"].as_u64().unwrap() >= 16, "{compacted}");
    let before = inspect_files(&table);
    let files_before = before["files"].as_array().unwrap().len() as u64;
    let dates = before["dates"].as_array().unwrap().len() as u64;
    assert!(files_before > 3 * dates, "many small files: {files_before}");

    let report = json(&run_ok(&["optimize", "--config", config]));
    assert_eq!(report["files_removed"], files_before, "{report}");
    assert_eq!(report["files_added"], dates, "{report}");
    assert_eq!(report["rows"], 8_000, "{report}");
    let after = inspect_files(&table);
    for file in after["files"].as_array().unwrap() {
        assert_eq!(file["sorted"], true, "{file}");
        assert_eq!(
            file["blooms"],
            serde_json::json!(["_key", SUBJECT]),
            "{file}"
        );
    }
    assert_keys(&table, &keys(0..8_000));
    // Nothing left to merge.
    let again = json(&run_ok(&["optimize", "--config", config]));
    assert_eq!(again["commits"], 0, "{again}");

    // Replaced files stay for readers of old versions until vacuum.
    assert_eq!(parquet_on_disk(&table) as u64, files_before + dates);
    let dry = json(&run_ok(&[
        "vacuum",
        "--config",
        config,
        "--retention-hours",
        "0",
        "--dry-run",
    ]));
    assert_eq!(
        dry["files_deleted"].as_array().unwrap().len() as u64,
        files_before
    );
    assert_eq!(parquet_on_disk(&table) as u64, files_before + dates);
    let vacuumed = json(&run_ok(&[
        "vacuum",
        "--config",
        config,
        "--retention-hours",
        "0",
    ]));
    assert_eq!(
        vacuumed["files_deleted"].as_array().unwrap().len() as u64,
        files_before
    );
    assert_eq!(parquet_on_disk(&table) as u64, dates);
    assert_keys(&table, &keys(0..8_000));

    let log: Vec<String> = std::fs::read_dir(table.join("_delta_log"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        log.iter().any(|n| n.ends_with(".checkpoint.parquet")),
        "{log:?}"
    );
    assert!(log.iter().any(|n| n == "_last_checkpoint"), "{log:?}");
}

/// Runs `tributary optimize` over and over until `stop` exists.
pub(crate) fn optimize_until(
    config: &Path,
    stop: &Path,
) -> std::thread::JoinHandle<Vec<serde_json::Value>> {
    let (config, stop) = (config.to_path_buf(), stop.to_path_buf());
    std::thread::spawn(move || {
        let mut reports = Vec::new();
        while !stop.exists() {
            let out = tributary()
                .args(["optimize", "--config", config.to_str().unwrap()])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "optimize failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            reports.push(json(&out));
            std::thread::sleep(Duration::from_millis(300));
        }
        reports
    })
}

#[test]
fn two_compactors_an_optimize_and_ingest_on_s3_lose_and_duplicate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let table = s3::new_table("concurrent");
    let extra = "[ingest.batch]\nmax_records = 400\nmax_latency_ms = 200\n\n\
                 [compact]\ninterval_ms = 200\nmax_files_per_commit = 4\nlease_ms = 5000\n";
    let (config, input) = config(dir.path(), &table, extra);
    let mut processes = Processes::default();
    let config_str = config.to_str().unwrap();
    processes.spawn(tributary().args(["ingest", "--config", config_str]));
    processes.spawn(tributary().args(["compact", "--config", config_str]));
    processes.spawn(tributary().args(["compact", "--config", config_str]));
    let stop = dir.path().join("stop");
    let optimizer = optimize_until(&config, &stop);

    // Files arrive one after the other; the first file's first 200 keys are
    // deleted once they are in the table (a tombstone that arrived before
    // its rows would delete nothing).
    let per_file = 3_000;
    let mut expected: Vec<String> = Vec::new();
    for f in 0..5u64 {
        let first = f * per_file;
        std::fs::write(
            input.join(format!("f{f}.ndjson")),
            records(first, per_file, None, None),
        )
        .unwrap();
        expected.extend(keys(first..first + per_file));
        std::thread::sleep(Duration::from_millis(700));
    }
    wait_for(
        Duration::from_secs(90),
        "the first file in the table",
        || {
            let present: HashSet<String> = table_keys(&table).into_iter().collect();
            keys(0..200)
                .iter()
                .all(|k| present.contains(k))
                .then_some(())
        },
    );
    std::fs::write(
        input.join("f9-deletes.ndjson"),
        records(0, 200, Some("delete"), None),
    )
    .unwrap();
    expected.retain(|k| !keys(0..200).contains(k));

    let counts = wait_for(Duration::from_secs(120), "every record compacted", || {
        let got = table_keys(&table);
        (got.len() == expected.len() && !got.contains(&"r0".to_string())).then_some(got.len())
    });
    std::fs::write(&stop, "").unwrap();
    let reports = optimizer.join().unwrap();
    drop(processes);
    assert_eq!(counts, expected.len());
    assert_keys(&table, &expected);
    let merged: u64 = reports
        .iter()
        .map(|r| r["files_removed"].as_u64().unwrap())
        .sum();
    assert!(
        merged > 0,
        "optimize merged files while the compactors ran: {reports:?}"
    );

    // Python deltalake reads the table, and each file is sorted.
    let out = run_python(
        &format!(
            "import sys, json, deltalake\n{S3_STORAGE_OPTIONS}\n\
             dt = deltalake.DeltaTable(sys.argv[1], storage_options=storage_options(sys.argv[1]))\n\
             ops = {{}}\n\
             for h in dt.history():\n\
             \x20   ops[h['operation']] = ops.get(h['operation'], 0) + 1\n\
             print(json.dumps(ops))"
        ),
        &[table.to_str().unwrap()],
    );
    let ops: HashMap<String, u64> = serde_json::from_str(out.trim()).unwrap();
    for op in ["WRITE", "OPTIMIZE", "DELETE"] {
        assert!(
            ops.get(op).copied().unwrap_or(0) > 0,
            "{op} commits in {ops:?}"
        );
    }
}
