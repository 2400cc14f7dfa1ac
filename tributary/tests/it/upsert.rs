//! Upsert mode (`[lake.upsert]`): on tansu, updates, older re-sends
//! arriving later, Kafka tombstones and a key moving to another day, over
//! several compaction rounds and a compactor killed with SIGKILL between
//! rounds; on S3, two compactors and an optimize at once (the commit
//! conflict path); and a compactor killed inside a round's rewrite. The
//! table holds exactly the latest version of each live key, read with
//! Python `deltalake`.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use crate::compaction::{self, json, keys, optimize_until, records};
use crate::kafka::{Broker, config, ingest_once, produce_keyed};
use crate::operations::{Processes, wait_for};
use crate::{S3_STORAGE_OPTIONS, run_ok, run_python, s3, table_keys, tributary};

/// Day 1 and day 2 (2026-11-20 and 2026-11-21, UTC) in milliseconds.
const DAY1: i64 = 1_795_478_400_000;
const DAY2: i64 = DAY1 + 86_400_000;

/// What was produced, in order, and the table it must end as.
#[derive(Default)]
struct Model {
    /// Kafka (key, value) pairs; `None` is a tombstone.
    pairs: Vec<(String, Option<String>)>,
    /// Per live key: (version, sequence number, day).
    table: BTreeMap<String, (i64, i64, i64)>,
    /// Messages produced so far (the sequence number of the next).
    sent: i64,
}

impl Model {
    /// A record of key `k{i}` with version `v` on day `ts`: it replaces the
    /// key's row unless that has a higher version (on a tie, the later one
    /// wins: it has the higher position).
    fn send(&mut self, i: usize, v: i64, ts: i64) {
        let key = format!("k{i}");
        let n = self.sent;
        self.sent += 1;
        let value =
            format!(r#"{{"host":"h","messages":[{{"id":"{key}","v":{v},"n":{n},"ts":{ts}}}]}}"#);
        self.pairs.push((key.clone(), Some(value)));
        if self.table.get(&key).is_none_or(|&(old, _, _)| v >= old) {
            self.table.insert(key, (v, n, ts));
        }
    }

    /// A tombstone of key `k{i}`: the key is gone until a later record of
    /// it, whatever that record's version.
    fn delete(&mut self, i: usize) {
        let key = format!("k{i}");
        self.sent += 1;
        self.pairs.push((key.clone(), None));
        self.table.remove(&key);
    }

    /// Produces what was sent since the last call.
    fn produce(&mut self, dir: &Path, broker: &Broker) {
        let pairs: Vec<(&str, Option<String>)> = self
            .pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        produce_keyed(dir, broker, "events", &pairs);
        self.pairs.clear();
    }

    /// Asserts the table holds exactly one row per live key, the latest
    /// version, on its day.
    fn assert_table(&self, table: &Path) {
        let out = run_python(
            "import sys, json, deltalake\n\
             t = deltalake.DeltaTable(sys.argv[1]).to_pyarrow_table(\n\
                 columns=['_key', 'messages_v', 'messages_n', 'date'])\n\
             rows = sorted([r['_key'], r['messages_v'], r['messages_n'], str(r['date'])]\n\
                 for r in t.to_pylist())\n\
             print(json.dumps(rows))",
            &[table.to_str().unwrap()],
        );
        let rows: Vec<(String, i64, i64, String)> = serde_json::from_str(out.trim()).unwrap();
        let day = |ts: i64| {
            chrono::DateTime::from_timestamp_millis(ts)
                .unwrap()
                .format("%Y-%m-%d")
                .to_string()
        };
        let expected: Vec<(String, i64, i64, String)> = self
            .table
            .iter()
            .map(|(k, &(v, n, ts))| (k.clone(), v, n, day(ts)))
            .collect();
        let mut sorted = expected.clone();
        sorted.sort();
        assert_eq!(rows.len(), sorted.len(), "rows in the table");
        assert_eq!(rows, sorted);
    }
}

#[test]
fn upsert_on_kafka_keeps_the_latest_version_of_each_live_key() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    broker.create_topic("events", 1);
    let table = dir.path().join("table");
    let config = config(
        dir.path(),
        &broker,
        "events",
        &table,
        "",
        "max_records = 20\nmax_latency_ms = 300",
    );
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[ingest]",
        "[lake.upsert]\norder_by = \"messages_v\"\n\n[compact]\ninterval_ms = 100\n\n[ingest]",
    );
    std::fs::write(&config, text).unwrap();
    let config_arg = config.to_str().unwrap();
    let compact = || json(&run_ok(&["compact", "--config", config_arg, "--once"]));
    let mut model = Model::default();

    // Round 1: 300 keys, version 1.
    for i in 0..300 {
        model.send(i, 1, DAY1);
    }
    model.produce(dir.path(), &broker);
    ingest_once(&config);
    compact();
    model.assert_table(&table);

    // Round 2: updates of k0–k99, then older re-sends of k0–k9 staged after
    // them (dropped within the round).
    for i in 0..100 {
        model.send(i, 2, DAY1);
    }
    for i in 0..10 {
        model.send(i, 0, DAY1);
    }
    model.produce(dir.path(), &broker);
    ingest_once(&config);
    let report = compact();
    assert_eq!(report["rows_upserted"], 100, "{report}");
    assert_eq!(report["rows_older_than_round"], 10, "{report}");
    assert_eq!(report["rows_older_than_table"], 0, "{report}");
    model.assert_table(&table);

    // Round 3: older re-sends of compacted keys (the table's rows win),
    // tombstones, a key created, deleted and re-created by an older
    // version, keys moving to day 2, and same-version re-sends (the later
    // one wins).
    for i in 10..20 {
        model.send(i, 1, DAY1);
    }
    for i in 20..30 {
        model.delete(i);
    }
    model.send(300, 5, DAY1);
    model.delete(300);
    model.send(300, 1, DAY1);
    for i in 30..40 {
        model.send(i, 3, DAY2);
    }
    for i in 150..160 {
        model.send(i, 1, DAY1);
    }
    model.produce(dir.path(), &broker);
    ingest_once(&config);
    let report = compact();
    assert_eq!(report["rows_older_than_table"], 10, "{report}");
    assert_eq!(report["rows_deleted_from_table"], 10, "{report}");
    assert_eq!(report["rows_upserted"], 20, "{report}");
    model.assert_table(&table);

    // Round 4, many small rounds with the compactor killed with SIGKILL: newer versions of the even keys, older re-sends of
    // the odd ones (a deleted key comes back with it), more tombstones.
    for i in 0..300 {
        model.send(i, if i % 2 == 0 { 4 } else { 0 }, DAY1);
    }
    for i in 40..45 {
        model.delete(i);
    }
    model.produce(dir.path(), &broker);
    ingest_once(&config);
    // A compactor killed ever later, until one finishes: at least one kill
    // lands between two of the rounds, and after every kill the table
    // holds one row per key.
    let staging = table.join("_tributary").join("staging");
    let mut processes = Processes::default();
    let mut killed_midway = false;
    for step in 1..40 {
        let before = files_under(&staging);
        if before == 0 {
            break;
        }
        // One staged file per round.
        let pid = processes
            .spawn(
                tributary()
                    .args(["compact", "--config", config_arg])
                    .env("TRIBUTARY_COMPACT__MAX_FILES_PER_COMMIT", "1"),
            )
            .id();
        std::thread::sleep(Duration::from_millis(150 * step));
        processes.kill9(pid);
        let after = files_under(&staging);
        killed_midway |= after > 0 && after < before;
        let keys = table_keys(&table);
        let unique: HashSet<&String> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len(), "a key twice after a kill");
    }
    assert!(killed_midway, "no kill landed between two rounds");
    compact();
    model.assert_table(&table);
}

/// Files under `dir` (none if it does not exist).
fn files_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|e| e.unwrap().path())
        .map(|p| if p.is_dir() { files_under(&p) } else { 1 })
        .sum()
}

/// Every row of `table` (local or on S3) as (`_key`, `messages_n`), sorted,
/// read with Python `deltalake`.
fn key_versions(table: &Path) -> Vec<(String, i64)> {
    let out = run_python(
        &format!(
            "import sys, json, deltalake\n{S3_STORAGE_OPTIONS}\n\
             t = deltalake.DeltaTable(sys.argv[1], storage_options=storage_options(sys.argv[1]))\n\
             t = t.to_pyarrow_table(columns=['_key', 'messages_n'])\n\
             print(json.dumps(sorted(zip(t.column('_key').to_pylist(), t.column('messages_n').to_pylist()))))"
        ),
        &[table.to_str().unwrap()],
    );
    serde_json::from_str(out.trim()).unwrap()
}

/// Keys `r<first>..` with version `n`, as [`records`] writes them, into
/// `model` (the highest version of each key wins), and the file's text.
fn versions(model: &mut BTreeMap<String, i64>, first: u64, count: u64, n: i64) -> String {
    for key in keys(first..first + count) {
        let v = model.entry(key).or_insert(n);
        *v = (*v).max(n);
    }
    records(first, count, None, Some(n))
}

/// The model as sorted (key, version) rows.
fn rows(model: &BTreeMap<String, i64>) -> Vec<(String, i64)> {
    model.iter().map(|(k, &n)| (k.clone(), n)).collect()
}

#[test]
fn upsert_with_two_compactors_an_optimize_and_ingest_on_s3_keeps_the_latest_versions() {
    let dir = tempfile::tempdir().unwrap();
    let table = s3::new_table("upsert-concurrent");
    let extra = "[lake.upsert]\norder_by = \"messages_n\"\n\n\
                 [ingest.batch]\nmax_records = 400\nmax_latency_ms = 200\n\n\
                 [compact]\ninterval_ms = 200\nmax_files_per_commit = 4\nlease_ms = 5000\n";
    let (config, input) = compaction::config(dir.path(), &table, extra);
    let config_str = config.to_str().unwrap();
    let mut processes = Processes::default();
    processes.spawn(tributary().args(["ingest", "--config", config_str]));
    let logs: Vec<_> = (0..2)
        .map(|i| dir.path().join(format!("compact{i}.log")))
        .collect();
    for log in &logs {
        let log = std::fs::File::create(log).unwrap();
        processes.spawn(
            tributary()
                .args(["compact", "--config", config_str])
                .stderr(log),
        );
    }
    let stop = dir.path().join("stop");
    let optimizer = optimize_until(&config, &stop);

    // Files arrive one after the other, each staged as its own source
    // partition: the two compactors take different files, and the updates
    // of one key in two files meet in concurrent rounds.
    let mut model = BTreeMap::new();
    let files = [
        (0, 3_000, 1),
        (3_000, 3_000, 1),
        (0, 1_500, 3),
        (1_000, 1_500, 2),
        (4_000, 500, 0),
        (2_000, 1_500, 4),
    ];
    for (f, (first, count, n)) in files.into_iter().enumerate() {
        let text = versions(&mut model, first, count, n);
        std::fs::write(input.join(format!("f{f}.ndjson")), text).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let wait = |model: &BTreeMap<String, i64>, what: &str| {
        let expected = rows(model);
        wait_for(Duration::from_secs(120), what, || {
            let created = !s3::object_keys(&table, "_delta_log/").is_empty();
            (created && key_versions(&table) == expected).then_some(())
        });
    };
    wait(&model, "the latest version of every key");
    // Tombstones, once the rows they delete are in the table.
    std::fs::write(
        input.join("f9-deletes.ndjson"),
        records(5_000, 200, Some("delete"), None),
    )
    .unwrap();
    for key in keys(5_000..5_200) {
        model.remove(&key);
    }
    wait(&model, "the deleted keys gone");
    std::fs::write(&stop, "").unwrap();
    let reports = optimizer.join().unwrap();
    drop(processes);
    assert_eq!(key_versions(&table), rows(&model));
    let merged: u64 = reports
        .iter()
        .map(|r| r["files_removed"].as_u64().unwrap())
        .sum();
    assert!(merged > 0, "optimize merged files meanwhile: {reports:?}");
    let failed: Vec<String> = logs
        .iter()
        .flat_map(|log| {
            let text = std::fs::read_to_string(log).unwrap();
            text.lines()
                .filter(|l| l.contains("compaction round failed"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    eprintln!("compaction rounds failed and rerun: {}", failed.len());
    for line in &failed {
        eprintln!("{line}");
    }
}

/// Parquet files under `dir`, at any depth.
fn parquet_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|e| e.unwrap().path())
        .map(|p| match p.is_dir() {
            true => parquet_files(&p),
            false => usize::from(p.extension().is_some_and(|e| e == "parquet")),
        })
        .sum()
}

/// Versions in the table's log.
fn log_versions(table: &Path) -> usize {
    std::fs::read_dir(table.join("_delta_log"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|e| e == "json")
        })
        .count()
}

#[test]
fn upsert_compactor_killed_inside_a_rewrite_recovers_to_the_latest_versions() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table");
    let extra = "[lake.upsert]\norder_by = \"messages_n\"\n\n\
                 [ingest.batch]\nmax_records = 4000\n\n\
                 [compact]\nmax_files_per_commit = 1\noptimize_min_files = 0\n";
    let (config, input) = compaction::config(dir.path(), &table, extra);
    let config_str = config.to_str().unwrap();
    let ingest = || run_ok(&["ingest", "--config", config_str, "--once"]);
    let compact = || json(&run_ok(&["compact", "--config", config_str, "--once"]));

    // A table of several files (one per round and day), each holding keys
    // of every stretch of the key range.
    let rows_in_table = 40_000;
    let mut model = BTreeMap::new();
    let text = versions(&mut model, 0, rows_in_table, 1);
    std::fs::write(input.join("base.ndjson"), text).unwrap();
    ingest();
    compact();
    let files_in_table = parquet_files(&table);

    // Updates of every tenth key (every file holds some), older re-sends
    // and tombstones: each round rewrites every file of the table.
    let mut text = String::new();
    for i in (0..rows_in_table).step_by(10) {
        text.push_str(&versions(&mut model, i, 1, 2));
    }
    for i in (3..rows_in_table).step_by(50) {
        text.push_str(&versions(&mut model, i, 1, 0));
    }
    for i in (5..rows_in_table).step_by(100) {
        text.push_str(&records(i, 1, Some("delete"), None));
        model.remove(&keys(i..i + 1)[0]);
    }
    std::fs::write(input.join("updates.ndjson"), text).unwrap();
    // In files of 1,000 records: each is a round that rewrites files, so
    // there are several rounds to kill inside.
    let staged = tributary()
        .args(["ingest", "--config", config_str, "--once"])
        .env("TRIBUTARY_INGEST__BATCH__MAX_RECORDS", "1000")
        .status()
        .unwrap();
    assert!(staged.success(), "ingest --once: {staged}");

    // A compactor killed ever later, from 20 ms after its start in 15 ms
    // steps (a release build's round takes tens of milliseconds). A kill
    // that leaves new Parquet files and no commit landed after a rewrite
    // wrote its first file; with fewer new files than the table has,
    // before it wrote the last.
    let staging = table.join("_tributary").join("staging");
    let mut processes = Processes::default();
    let mut inside_rewrite = Vec::new();
    for step in 0..80 {
        if files_under(&staging) == 0 || !inside_rewrite.is_empty() {
            break;
        }
        let (files, versions) = (parquet_files(&table), log_versions(&table));
        let pid = processes
            .spawn(tributary().args(["compact", "--config", config_str]))
            .id();
        std::thread::sleep(Duration::from_millis(20 + 15 * step));
        processes.kill9(pid);
        let written = parquet_files(&table) - files;
        if log_versions(&table) == versions && written > 0 && written < files_in_table {
            inside_rewrite.push(written);
        }
    }
    assert!(
        !inside_rewrite.is_empty(),
        "no kill landed inside a rewrite of the table's {files_in_table} files"
    );
    eprintln!(
        "a kill left {inside_rewrite:?} new files of the table's {files_in_table} rewritten, uncommitted"
    );
    let report = compact();
    assert!(
        report["table_files_rewritten"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert_eq!(key_versions(&table), rows(&model));
}
