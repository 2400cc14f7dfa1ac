//! One compactor, several tables (a routed configuration: `lake.table_uri`
//! ending in `/${table}`): fair rounds while one table has a big backlog,
//! tables found under the template's parent (also after the start),
//! `compact --once` over every table, `forget` over every table, and the
//! `--table` flag. Rows are staged into each table with a single-table
//! configuration of the files source (ingest routing is not what is tested
//! here).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::compaction::{assert_keys, config, json, records};
use crate::forget::objects_holding;
use crate::operations::{Processes, free_port, http_get, sample, wait_for};
use crate::{S3_STORAGE_OPTIONS, run_ok, run_python, s3, tributary};

/// `r<first>..r<end>`.
fn keys(range: std::ops::Range<u64>) -> Vec<String> {
    range.map(|i| format!("r{i}")).collect()
}

/// Stages records `first..first + count` into table `name` under `root`
/// (`ingest --once` with a single-table configuration in `dir/<name>`);
/// `batch` records per staged file.
fn stage(dir: &Path, root: &Path, name: &str, first: u64, count: u64, batch: u64) {
    let table_dir = dir.join(format!("ingest-{name}-{first}"));
    let (config, input) = config(
        &table_dir,
        &root.join(name),
        &format!("[ingest.batch]\nmax_records = {batch}\n"),
    );
    std::fs::write(
        input.join("records.ndjson"),
        records(first, count, None, None),
    )
    .unwrap();
    run_ok(&["ingest", "--config", config.to_str().unwrap(), "--once"]);
}

/// A routed compactor configuration: tables `root/<name>`, `named` ones
/// listed as `[tables.<name>]`, and `extra` appended.
fn routed_config(dir: &Path, root: &Path, named: &[&str], extra: &str) -> PathBuf {
    let tables: String = named.iter().map(|n| format!("[tables.{n}]\n")).collect();
    let text = format!(
        "[lake]\ntable_uri = \"{}/${{table}}\"\nsubject_columns = [\"messages_user\"]\n{}\n{tables}\n[compact]\ninterval_ms = 100\n{extra}\n",
        root.display(),
        s3::lake_section(root),
    );
    let path = dir.join("routed.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Staged row files left in table `root/<name>` (a local directory).
fn staged_files(root: &Path, name: &str) -> usize {
    let staging = root.join(name).join("_tributary/staging");
    walk(&staging)
}

fn walk(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                walk(&path)
            } else {
                usize::from(path.extension().is_some_and(|x| x == "avro"))
            }
        })
        .sum()
}

/// The `_key`s of the Delta table at `table`, or `None` before it exists.
fn keys_if_table(table: &Path) -> Option<Vec<String>> {
    table
        .join("_delta_log")
        .exists()
        .then(|| crate::table_keys(table))
}

/// Rows of `table` whose subject column is `subject`, read with `deltalake`.
fn subject_rows(table: &Path, subject: &str) -> u64 {
    let out = run_python(
        &format!(
            "import sys, deltalake\n{S3_STORAGE_OPTIONS}\n\
             t = deltalake.DeltaTable(sys.argv[1], storage_options=storage_options(sys.argv[1]))\n\
             users = t.to_pyarrow_table(columns=['messages_user']).column('messages_user').to_pylist()\n\
             print(sum(1 for u in users if u == sys.argv[2]))"
        ),
        &[table.to_str().unwrap(), subject],
    );
    out.trim().parse().unwrap()
}

#[test]
fn one_compactor_serves_several_tables_fairly_and_finds_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("lake");
    // A big backlog: ~120 staged files, compacted one per round; and a
    // small table with one file.
    stage(dir.path(), &root, "big", 0, 600, 1);
    stage(dir.path(), &root, "small", 10_000, 40, 1_000);
    let big_files = staged_files(&root, "big");
    assert!(big_files >= 100, "{big_files} staged files");
    let config = routed_config(
        dir.path(),
        &root,
        &["small"],
        "max_files_per_commit = 1\noptimize_min_files = 0\n",
    );
    let port = free_port();
    let mut processes = Processes::default();
    processes.spawn(
        tributary()
            .args(["compact", "--config", config.to_str().unwrap()])
            .env(
                "TRIBUTARY_SERVICE__LISTEN_ADDR",
                format!("127.0.0.1:{port}"),
            ),
    );

    // The small table's rows are in while most of the big backlog waits:
    // the big table gets one round per turn, not every round.
    let small_keys = keys(10_000..10_040);
    wait_for(Duration::from_secs(60), "the small table", || {
        (keys_if_table(&root.join("small"))?.len() == small_keys.len()).then_some(())
    });
    let big_left = staged_files(&root, "big");
    assert!(
        big_left * 2 > big_files,
        "the small table waited for the big backlog: {big_left} of {big_files} files left"
    );
    assert_keys(&root.join("small"), &small_keys);

    // A table started after the compactor is found by the next listing
    // (every interval_ms × 12).
    stage(dir.path(), &root, "late", 20_000, 30, 1_000);
    let late_keys = keys(20_000..20_030);
    wait_for(Duration::from_secs(60), "the late table", || {
        (keys_if_table(&root.join("late"))?.len() == late_keys.len()).then_some(())
    });
    assert_keys(&root.join("late"), &late_keys);

    wait_for(Duration::from_secs(180), "the big backlog", || {
        (staged_files(&root, "big") == 0).then_some(())
    });
    assert_keys(&root.join("big"), &keys(0..600));

    // Each table's metrics carry its name.
    let body = wait_for(Duration::from_secs(30), "metrics", || {
        let (_, body) = http_get(port, "/metrics")?;
        (sample(
            &body,
            r#"tributary_compactor_compacted_rows_total{table="big"}"#,
        )? == 600.0)
            .then_some(body)
    });
    for (table, rows) in [("small", 40.0), ("late", 30.0)] {
        let series = format!(r#"tributary_compactor_compacted_rows_total{{table="{table}"}}"#);
        assert_eq!(sample(&body, &series), Some(rows), "{series}");
    }
    let rounds = |table: &str| {
        sample(
            &body,
            &format!(r#"tributary_compactor_rounds_total{{table="{table}"}}"#),
        )
        .unwrap_or(0.0)
    };
    assert!(rounds("big") >= big_files as f64, "{body}");
    assert!(rounds("small") >= 1.0 && rounds("late") >= 1.0);
}

#[test]
fn compact_once_over_a_routed_config_compacts_every_table_on_s3() {
    let dir = tempfile::tempdir().unwrap();
    let root = s3::new_table("routed");
    // `a` is named in the configuration; `b` is only found under the root.
    stage(dir.path(), &root, "a", 0, 200, 50);
    stage(dir.path(), &root, "b", 1_000, 300, 50);
    let config = routed_config(dir.path(), &root, &["a"], "");
    let config = config.to_str().unwrap();

    let report = json(&run_ok(&["compact", "--config", config, "--once"]));
    for (table, rows) in [("a", 200), ("b", 300)] {
        assert_eq!(
            report["tables"][table]["rows_written"], rows,
            "{table}: {report}"
        );
    }
    assert!(report.get("failed").is_none(), "{report}");
    assert_keys(&root.join("a"), &keys(0..200));
    assert_keys(&root.join("b"), &keys(1_000..1_300));

    // Nothing is left: a second run compacts nothing in either table.
    let again = json(&run_ok(&["compact", "--config", config, "--once"]));
    for table in ["a", "b"] {
        assert_eq!(again["tables"][table]["files_compacted"], 0, "{again}");
    }
}

#[test]
fn forget_over_two_tables_erases_from_both_and_reports_each_on_s3() {
    let dir = tempfile::tempdir().unwrap();
    let root = s3::new_table("forget-routed");
    stage(dir.path(), &root, "a", 0, 400, 100);
    stage(dir.path(), &root, "b", 1_000, 400, 100);
    let config = routed_config(dir.path(), &root, &[], "");
    let config = config.to_str().unwrap();
    run_ok(&["compact", "--config", config, "--once"]);
    // Records use the users u000..u040 (`n % 41`): u007 is in both tables.
    let subject = "u007";
    let before: Vec<u64> = ["a", "b"]
        .iter()
        .map(|t| subject_rows(&root.join(t), subject))
        .collect();
    assert!(before.iter().all(|&n| n > 0), "{before:?}");

    // `--table` names an existing table, and commands that need one table
    // ask for it.
    let subjects = dir.path().join("subjects.txt");
    std::fs::write(&subjects, format!("{subject}\n")).unwrap();
    let subjects = subjects.to_str().unwrap();
    let unknown = tributary()
        .args(["forget", "--config", config, "--table", "nope"])
        .args(["--subjects", subjects])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        stderr.contains("--table") && stderr.contains("a, b"),
        "{stderr}"
    );
    let partition = tributary()
        .args(["optimize", "--config", config, "--partition", "2026-11-25"])
        .output()
        .unwrap();
    assert_eq!(partition.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&partition.stderr).contains("--table NAME"));

    // Without `--table`: every table, and the report names each.
    let report = json(&run_ok(&[
        "forget",
        "--config",
        config,
        "--subjects",
        subjects,
        "--request-id",
        "req-1",
        "--grace-minutes",
        "0",
    ]));
    assert_eq!(report["request_id"], "req-1", "{report}");
    assert_eq!(report["complete"], true, "{report}");
    for (table, rows) in [("a", before[0]), ("b", before[1])] {
        let part = &report["tables"][table];
        assert_eq!(part["complete"], true, "{table}: {report}");
        assert_eq!(part["table"]["rows_erased"], rows, "{table}: {report}");
        assert_eq!(subject_rows(&root.join(table), subject), 0, "{table}");
        assert!(
            objects_holding(&root.join(table), &[subject]).is_empty(),
            "{table} still holds the subject"
        );
    }
    // The other users' rows stay.
    let left = crate::table_keys(&root.join("a")).len() + crate::table_keys(&root.join("b")).len();
    assert_eq!(left as u64, 800 - before[0] - before[1]);

    // One table only: that table's report.
    let one = json(&run_ok(&[
        "forget",
        "--config",
        config,
        "--table",
        "b",
        "--subjects",
        subjects,
        "--request-id",
        "req-2",
        "--grace-minutes",
        "0",
    ]));
    let tables: Vec<&String> = one["tables"].as_object().unwrap().keys().collect();
    assert_eq!(tables, ["b"], "{one}");
}
