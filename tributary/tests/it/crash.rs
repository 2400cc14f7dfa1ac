use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{run_ok, table_keys, tributary, write_config, write_records};

/// Ingest (and compaction) killed with SIGKILL at random moments, restarted
/// each time, then run to the end: every input record is in the table exactly
/// once.
#[test]
fn kill_9_at_random_moments_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    kill_9_and_recover(dir.path(), &dir.path().join("table"), 300_000);
}

/// The same on S3, where the create-only row files and the Delta commits rely
/// on S3's conditional writes. Fewer records: the test S3 server is slower
/// than a local disk, and the kills should still land mid-stream.
#[test]
fn kill_9_on_s3_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    kill_9_and_recover(dir.path(), &crate::s3::new_table("crash"), 100_000);
}

/// Kills ingest and compactor runs on `records` records at random moments,
/// then checks the table holds each record once.
fn kill_9_and_recover(dir: &Path, table: &Path, records: u64) {
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    // Two plain files and a gzip file of 40%, 33% and 27% of the records.
    let (a, b) = (records * 40 / 100, records * 33 / 100);
    let mut expected = Vec::new();
    expected.extend(write_records(&input.join("a.ndjson"), 0, a, false));
    expected.extend(write_records(&input.join("b.ndjson"), a, b, false));
    expected.extend(write_records(
        &input.join("c.ndjson.gz"),
        a + b,
        records - a - b,
        true,
    ));
    let config = write_config(dir, &input, table, "[ingest.batch]\nmax_records = 1500\n");
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
    expected.extend(write_records(
        &input.join("d.ndjson"),
        records,
        5_000,
        false,
    ));

    run_ok(&["ingest", "--config", config, "--once"]);
    run_ok(&["compact", "--config", config, "--once"]);

    let keys = table_keys(table);
    let unique: HashSet<&String> = keys.iter().collect();
    assert_eq!(
        unique.len(),
        keys.len(),
        "duplicates in the table (seed {seed})"
    );
    let expected: HashSet<&String> = expected.iter().collect();
    let missing = expected.difference(&unique).count();
    let extra = unique.difference(&expected).count();
    assert_eq!((missing, extra), (0, 0), "missing/extra keys (seed {seed})");
}
