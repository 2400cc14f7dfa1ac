use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{envelopes, run_ok, table_keys, tributary, write_config, write_records};

/// Ingest (and compaction) killed with SIGKILL at random moments, restarted
/// each time, then run to the end: every input record is in the table exactly
/// once.
#[test]
fn kill_9_at_random_moments_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table");
    let (expected, seed) = kill_9_and_recover(dir.path(), &table, "", 300_000);
    assert_exactly(&table, expected.iter().map(|(_, id)| id), seed);
}

/// The same with the stream routed by a field into three tables: each
/// batch is staged into every table, and the kills land between the
/// tables' puts too. Each table holds exactly the records of its hosts.
#[test]
fn kill_9_of_a_field_routed_stream_loses_and_duplicates_nothing_in_any_table() {
    let dir = tempfile::tempdir().unwrap();
    let tables = dir.path().join("tables");
    let routing = "[[ingest.routing.fields]]\ntopic = \"test\"\nfield = \"host\"\n\
                   values = { h0 = \"a\", h1 = \"b\" }\ndefault_table = \"rest\"\n";
    let (expected, seed) =
        kill_9_and_recover(dir.path(), &tables.join("${table}"), routing, 200_000);
    for (table, hosts) in [("a", &["h0"][..]), ("b", &["h1"]), ("rest", &["h2", "h3"])] {
        let ids = expected
            .iter()
            .filter(|(host, _)| hosts.contains(&host.as_str()))
            .map(|(_, id)| id);
        assert_exactly(&tables.join(table), ids, seed);
    }
}

/// The same on S3, where the create-only row files and the Delta commits rely
/// on S3's conditional writes. Fewer records: the test S3 server is slower
/// than a local disk, and the kills should still land mid-stream.
#[test]
fn kill_9_on_s3_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let table = crate::s3::new_table("crash");
    let (expected, seed) = kill_9_and_recover(dir.path(), &table, "", 100_000);
    assert_exactly(&table, expected.iter().map(|(_, id)| id), seed);
}

/// Kills ingest and compactor runs on `records` records at random moments
/// (configured with `extra`), then runs both to the end. Returns every
/// record's (host, id) and the seed of the kill times.
fn kill_9_and_recover(
    dir: &Path,
    table: &Path,
    extra: &str,
    records: u64,
) -> (Vec<(String, String)>, u64) {
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    // Two plain files and a gzip file of 40%, 33% and 27% of the records.
    let (a, b) = (records * 40 / 100, records * 33 / 100);
    let mut expected = Vec::new();
    let mut write = |name: &str, first: u64, records: u64, gz: bool| {
        write_records(&input.join(name), first, records, gz);
        expected.extend(hosts_and_ids(first, records));
    };
    write("a.ndjson", 0, a, false);
    write("b.ndjson", a, b, false);
    write("c.ndjson.gz", a + b, records - a - b, true);
    let config = write_config(
        dir,
        &input,
        table,
        &format!("{extra}[ingest.batch]\nmax_records = 1500\n"),
    );
    let config = config.to_str().unwrap();

    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("crash test seed {seed}");
    let mut rng = seed | 1;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };

    for round in 0..6 {
        let mut ingest = tributary()
            .args(["ingest", "--config", config])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        // Every other round a compactor runs alongside and is killed too.
        let mut compact = (round % 2 == 1).then(|| {
            tributary()
                .args(["compact", "--config", config])
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        });
        std::thread::sleep(Duration::from_millis(150 + next(900)));
        ingest.kill().unwrap();
        ingest.wait().unwrap();
        if let Some(c) = compact.as_mut() {
            std::thread::sleep(Duration::from_millis(next(300)));
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
    // A file that appears after the crashes is picked up as well.
    write("d.ndjson", records, 5_000, false);

    run_ok(&["ingest", "--config", config, "--once"]);
    run_ok(&["compact", "--config", config, "--once"]);
    (expected, seed)
}

/// The host and id of each record [`write_records`] writes from `first`.
fn hosts_and_ids(first: u64, records: u64) -> Vec<(String, String)> {
    let (lines, _) = envelopes(first, records);
    let mut records = Vec::new();
    for line in lines {
        let envelope: serde_json::Value = serde_json::from_str(&line).unwrap();
        for message in envelope["messages"].as_array().unwrap() {
            let host = envelope["host"].as_str().unwrap();
            records.push((
                host.to_string(),
                message["id"].as_str().unwrap().to_string(),
            ));
        }
    }
    records
}

/// Checks `table` holds each of `expected` once, and nothing else.
fn assert_exactly<'a>(table: &Path, expected: impl Iterator<Item = &'a String>, seed: u64) {
    let keys = table_keys(table);
    let unique: HashSet<&String> = keys.iter().collect();
    assert_eq!(
        unique.len(),
        keys.len(),
        "duplicates in the table (seed {seed})"
    );
    let expected: HashSet<&String> = expected.collect();
    let missing = expected.difference(&unique).count();
    let extra = unique.difference(&expected).count();
    assert_eq!((missing, extra), (0, 0), "missing/extra keys (seed {seed})");
}
