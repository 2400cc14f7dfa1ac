//! `lake.partition_by`: a table partitioned by date, hour and a column, read
//! back by the Python `deltalake` package and pyarrow; optimize per
//! partition; and the guard against a high-cardinality partition column.

use std::path::{Path, PathBuf};

use crate::{run_ok, run_python, table_keys, tributary, write_config};

/// Records per wave; a record every 1,000 s spans about three and a half
/// days.
const RECORDS: u64 = 300;

/// A configuration for `input` and `table` with `[lake]` lines added.
fn config_with(dir: &Path, input: &Path, table: &Path, lake: &str, extra: &str) -> PathBuf {
    let path = write_config(dir, input, table, extra);
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replacen("\n[ingest]\n", &format!("{lake}\n\n[ingest]\n"), 1);
    std::fs::write(&path, text).unwrap();
    path
}

/// The distinct (date, hour, host) partitions of a wave's records, and
/// those of its first day.
fn expected_partitions() -> (usize, usize) {
    let partition = |i: u64| {
        let seconds = 1_795_478_400 + i * 1_000;
        (seconds / 86_400, seconds / 3_600 % 24, i % 3)
    };
    let all: std::collections::BTreeSet<_> = (0..RECORDS).map(partition).collect();
    let first_day = all
        .iter()
        .filter(|(day, _, _)| *day == 1_795_478_400 / 86_400)
        .count();
    (all.len(), first_day)
}

/// Envelope lines of one record each, ids `w<wave>r<i>`, on the same event
/// times in every wave, and with `host` one of three values.
fn wave(input: &Path, wave: u64) -> Vec<String> {
    let mut ids = Vec::new();
    let lines: Vec<String> = (0..RECORDS)
        .map(|i| {
            let id = format!("w{wave}r{i}");
            let line = format!(
                r#"{{"host":"h{}","messages":[{{"id":"{id}","ts":{}}}]}}"#,
                i % 3,
                1_795_478_400_000 + i * 1_000_000
            );
            ids.push(id);
            line
        })
        .collect();
    std::fs::write(
        input.join(format!("w{wave}.ndjson")),
        lines.join("\n") + "\n",
    )
    .unwrap();
    ids
}

#[test]
fn date_hour_and_column_partitions_are_read_back_by_deltalake() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let table = dir.path().join("table");
    let config = config_with(
        dir.path(),
        &input,
        &table,
        r#"partition_by = ["date", "hour", "host"]"#,
        "",
    );
    let config = config.to_str().unwrap();
    let mut ids = Vec::new();
    for n in 0..2 {
        ids.extend(wave(&input, n));
        run_ok(&["ingest", "--config", config, "--once"]);
        run_ok(&["compact", "--config", config, "--once"]);
    }

    // Every row's partition values agree with its event time and host, and
    // each partition has one file per wave.
    let check = r#"
import sys, json, collections, deltalake
t = deltalake.DeltaTable(sys.argv[1])
rows = t.to_pyarrow_table()
schema = {f.name: str(f.type) for f in rows.schema}
bad = [r for r in rows.to_pylist()
       if r['date'] != r['messages_ts'].date() or r['_hour'] != r['messages_ts'].hour
          or r['host'] != 'h%d' % (int(r['messages_id'][3:]) % 3)]
files = collections.Counter(u.rsplit('/', 1)[0].split('/table/', 1)[1] for u in t.file_uris())
print(json.dumps({
    'partition_columns': t.metadata().partition_columns,
    'types': [schema['date'], schema['_hour'], schema['host'], schema['messages_ts']],
    'rows': rows.num_rows, 'bad': len(bad),
    'partitions': len(files), 'files_per_partition': sorted(set(files.values())),
    'example': min(files),
}))
"#;
    let before: serde_json::Value =
        serde_json::from_str(run_python(check, &[table.to_str().unwrap()]).trim()).unwrap();
    assert_eq!(
        before["partition_columns"],
        serde_json::json!(["date", "_hour", "host"])
    );
    assert_eq!(
        before["types"],
        serde_json::json!(["date32[day]", "int64", "string", "timestamp[us, tz=UTC]"])
    );
    assert_eq!(before["rows"], 2 * RECORDS);
    assert_eq!(before["bad"], 0);
    assert_eq!(before["example"], "date=2026-11-24/_hour=0/host=h0");
    let (partitions, first_day) = expected_partitions();
    assert_eq!(before["partitions"], partitions);
    assert_eq!(before["files_per_partition"], serde_json::json!([2]));

    // Optimize merges each partition's two files; `--partition` with a date
    // takes every partition of that day.
    let out = run_ok(&["optimize", "--config", config, "--partition", "2026-11-24"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["partitions"], first_day, "{report}");
    run_ok(&["optimize", "--config", config]);
    let after: serde_json::Value =
        serde_json::from_str(run_python(check, &[table.to_str().unwrap()]).trim()).unwrap();
    assert_eq!(after["rows"], 2 * RECORDS);
    assert_eq!(after["bad"], 0);
    assert_eq!(after["files_per_partition"], serde_json::json!([1]));

    let mut keys = table_keys(&table);
    keys.sort();
    ids.sort();
    assert_eq!(keys, ids);
}

#[test]
fn a_high_cardinality_partition_column_or_another_partitioning_fails_and_keeps_the_rows() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let table = dir.path().join("table");
    let compact_fails = |lake: &str, expected: &str| {
        let config = config_with(dir.path(), &input, &table, lake, "");
        let out = tributary()
            .args(["compact", "--config", config.to_str().unwrap(), "--once"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(expected),
            "{stderr}"
        );
        let staged = table.join("_tributary/staging/test");
        let files = std::fs::read_dir(&staged).unwrap().flatten().count();
        assert!(files > 0, "the rows stay staged");
    };

    let config = config_with(dir.path(), &input, &table, "", "");
    wave(&input, 0);
    run_ok(&["ingest", "--config", config.to_str().unwrap(), "--once"]);
    compact_fails(
        "partition_by = [\"date\", \"messages_id\"]\nmax_partition_values = 50",
        "partition column `messages_id` has more than 50 distinct values",
    );
    assert!(!table.join("_delta_log").exists(), "no table was created");

    // A table keeps the partitioning it was created with. (Each
    // configuration is written to the same file.)
    let config = config_with(dir.path(), &input, &table, "", "");
    run_ok(&["compact", "--config", config.to_str().unwrap(), "--once"]);
    wave(&input, 1);
    run_ok(&["ingest", "--config", config.to_str().unwrap(), "--once"]);
    compact_fails(
        "partition_by = [\"date\", \"host\"]",
        r#"is partitioned by ["date"], but lake.partition_by names ["date", "host"]"#,
    );
}
