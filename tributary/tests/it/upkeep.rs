//! The long-running compactor keeps the table healthy by itself: a slow
//! stream that adds one small file per round to the same date partition
//! never leaves more than `optimize_min_files - 1` files there, with no
//! `optimize` command run, and every record is in the table once.

use std::time::Duration;

use crate::operations::{Processes, free_port, http_get, sample, wait_for};
use crate::{run_python, table_keys, tributary, write_config};

/// Records per input file; each file is one ingest batch and one round.
const RECORDS_PER_FILE: u64 = 40;
/// Input files, written one after the other.
const FILES: u64 = 7;
/// `compact.optimize_min_files` in this test.
const MIN_FILES: u64 = 3;

#[test]
fn the_compactor_bin_packs_small_files_without_an_optimize_command() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let table = dir.path().join("table");
    let config = write_config(
        dir.path(),
        &input,
        &table,
        &format!("[compact]\ninterval_ms = 100\noptimize_min_files = {MIN_FILES}\n"),
    );
    let config = config.to_str().unwrap();
    let (ingest_port, compactor_port) = (free_port(), free_port());
    let mut processes = Processes::default();
    for (command, port) in [("ingest", ingest_port), ("compact", compactor_port)] {
        processes.spawn(tributary().args([command, "--config", config]).env(
            "TRIBUTARY_SERVICE__LISTEN_ADDR",
            format!("127.0.0.1:{port}"),
        ));
    }
    let metric = |name: &str| {
        let (_, body) = http_get(compactor_port, "/metrics")?;
        sample(&body, name)
    };

    // Each file's records share one event day, so every round adds a file
    // to the same partition. The next file is written once the last one's
    // rows are in the table.
    let mut ids = Vec::new();
    for file in 0..FILES {
        let lines: Vec<String> = (0..RECORDS_PER_FILE)
            .map(|i| {
                let id = format!("f{file}r{i}");
                let line = format!(
                    r#"{{"host":"h","messages":[{{"id":"{id}","n":{i},"ts":{}}}]}}"#,
                    1_795_478_400_000 + file * 1_000 + i
                );
                ids.push(id);
                line
            })
            .collect();
        std::fs::write(
            input.join(format!("{file}.ndjson")),
            lines.join("\n") + "\n",
        )
        .unwrap();
        let rows = ((file + 1) * RECORDS_PER_FILE) as f64;
        wait_for(
            Duration::from_secs(60),
            "the file's rows in the table",
            || (metric("tributary_compactor_compacted_rows_total")? >= rows).then_some(()),
        );
    }

    // Upkeep runs after the round that made the partition's third file, so
    // by the time it has run for the last round at most two files are left.
    let files_in_table = || -> Vec<String> {
        let out = run_python(
            "import sys, deltalake\nprint('\\n'.join(deltalake.DeltaTable(sys.argv[1]).file_uris()))",
            &[table.to_str().unwrap()],
        );
        out.lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    };
    let files = wait_for(
        Duration::from_secs(60),
        "upkeep to merge the small files",
        || {
            let files = files_in_table();
            (files.len() < MIN_FILES as usize).then_some(files)
        },
    );
    assert!(
        files.iter().all(|f| f.contains("/date=2026-11-24/")),
        "one date partition: {files:?}"
    );
    let merged = metric("tributary_compactor_optimized_files_total").unwrap();
    assert!(
        merged >= MIN_FILES as f64,
        "files merged by upkeep: {merged}"
    );
    assert_eq!(
        metric("tributary_compactor_upkeep_failures_total"),
        Some(0.0)
    );

    let mut keys = table_keys(&table);
    keys.sort();
    ids.sort();
    assert_eq!(keys, ids, "every record once");
}
