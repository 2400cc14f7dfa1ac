use std::collections::HashSet;
use std::path::Path;

use crate::{S3_STORAGE_OPTIONS, run_ok, run_python, table_keys, write_config, write_records};

/// Files (plain and gzip) → ingest → compact → read with Python `deltalake`:
/// the row count and a checksum of one column match what was generated.
#[test]
fn ingest_compact_and_read_with_python_deltalake() {
    let dir = tempfile::tempdir().unwrap();
    ingest_compact_and_read(dir.path(), &dir.path().join("table"));
}

/// Runs the pipeline of [`ingest_compact_and_read_with_python_deltalake`]
/// into `table` (a directory or an `s3://` URI) and checks what Python
/// `deltalake` reads. Returns the compaction report of the first run.
pub fn ingest_compact_and_read(dir: &Path, table: &Path) -> serde_json::Value {
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    let mut ids = write_records(&input.join("a.ndjson"), 0, 20_000, false);
    ids.extend(write_records(
        &input.join("b.ndjson.gz"),
        20_000,
        15_000,
        true,
    ));
    let config = write_config(dir, &input, table, "[ingest.batch]\nmax_records = 700\n");
    let config = config.to_str().unwrap();

    run_ok(&["ingest", "--config", config, "--once"]);
    let first = run_ok(&["compact", "--config", config, "--once"]);
    let first: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(first["rows_written"], 35_000);

    let expected_sum: u64 = (0..35_000).sum();
    let out = run_python(
        &format!(
            "import sys, json, deltalake, pyarrow as pa, pyarrow.compute as pc\n{S3_STORAGE_OPTIONS}\n\
             dt = deltalake.DeltaTable(sys.argv[1], storage_options=storage_options(sys.argv[1]))\n\
             t = dt.to_pyarrow_table()\n\
             adds = pa.table(dt.get_add_actions(flatten=True)).to_pydict()\n\
             print(json.dumps({{'rows': t.num_rows, 'sum': pc.sum(t.column('messages_n')).as_py(),\n\
               'dates': sorted(set(str(d) for d in t.column('date').to_pylist())), 'partitions': dt.metadata().partition_columns,\n\
               'types': {{f.name: str(f.type) for f in t.schema}},\n\
               'stats_rows': sum(adds['num_records']), 'has_min': 'min.messages_n' in adds,\n\
               'version': dt.version()}}))"
        ),
        &[table.to_str().unwrap()],
    );
    let got: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(got["rows"], 35_000);
    assert_eq!(got["sum"], expected_sum);
    assert_eq!(got["partitions"], serde_json::json!(["date"]));
    // The event time is a timestamp and the partition a date, not text.
    assert_eq!(got["types"]["date"], "date32[day]");
    assert_eq!(got["types"]["messages_ts"], "timestamp[us, tz=UTC]");
    assert_eq!(got["stats_rows"], 35_000, "add actions carry numRecords");
    assert_eq!(got["has_min"], true, "add actions carry minValues");
    assert_eq!(got["version"], first["table_version"]);
    assert!(
        got["dates"].as_array().unwrap().len() > 1,
        "event times span several dates"
    );

    // Staged files are gone once committed, and a second run adds nothing.
    run_ok(&["ingest", "--config", config, "--once"]);
    let report = run_ok(&["compact", "--config", config, "--once"]);
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(report["rows_written"], 0);

    let keys = table_keys(table);
    let unique: HashSet<&String> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len(), "duplicates in the table");
    assert_eq!(unique, ids.iter().collect());
    first
}

/// A column that first holds integers and later strings widens to string
/// within ingest; a new column in a later batch is added to the table schema.
#[test]
fn schema_widens_and_evolves_additively() {
    let dir = tempfile::tempdir().unwrap();
    let (input, table) = (dir.path().join("in"), dir.path().join("table"));
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(
        input.join("a.ndjson"),
        "{\"messages\":[{\"id\":\"a\",\"v\":1}]}\n",
    )
    .unwrap();
    let config = write_config(dir.path(), &input, &table, "");
    let config = config.to_str().unwrap();
    run_ok(&["ingest", "--config", config, "--once"]);
    run_ok(&["compact", "--config", config, "--once"]);
    std::fs::write(
        input.join("b.ndjson"),
        "{\"messages\":[{\"id\":\"b\",\"v\":2,\"extra\":true}]}\n{\"messages\":[{\"id\":\"c\",\"v\":\"three\"}]}\n",
    )
    .unwrap();
    run_ok(&["ingest", "--config", config, "--once"]);
    run_ok(&["compact", "--config", config, "--once"]);
    let out = run_python(
        "import sys, deltalake\n\
         t = deltalake.DeltaTable(sys.argv[1]).to_pyarrow_table().sort_by('_key')\n\
         print(t.column('messages_v').to_pylist(), t.column('messages_extra').to_pylist(), t.schema.field('messages_v').type)",
        &[table.to_str().unwrap()],
    );
    // `v` is a long in the table, so "three" cannot join it: ingest knows the
    // table's types and dead-letters that message instead of changing a value.
    assert_eq!(out.trim(), "[1, 2] [None, True] int64");
    let dead = std::fs::read_dir(table.join("_tributary/dead-letter/test/b.ndjson"))
        .unwrap()
        .count();
    assert_eq!(dead, 1);
}
