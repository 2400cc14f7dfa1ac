use std::collections::HashSet;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{run_ok, table_keys, tributary, write_config, write_records};

/// Ingest (and compaction) killed with SIGKILL at random moments, restarted
/// each time, then run to the end: every input record is in the table exactly
/// once.
#[test]
fn kill_9_at_random_moments_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (input, table) = (dir.path().join("in"), dir.path().join("table"));
    std::fs::create_dir_all(&input).unwrap();
    let mut expected = Vec::new();
    expected.extend(write_records(&input.join("a.ndjson"), 0, 120_000, false));
    expected.extend(write_records(
        &input.join("b.ndjson"),
        120_000,
        100_000,
        false,
    ));
    expected.extend(write_records(
        &input.join("c.ndjson.gz"),
        220_000,
        80_000,
        true,
    ));
    let config = write_config(
        dir.path(),
        &input,
        &table,
        "[ingest.batch]\nmax_records = 1500\n",
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
    expected.extend(write_records(
        &input.join("d.ndjson"),
        300_000,
        5_000,
        false,
    ));

    run_ok(&["ingest", "--config", config, "--once"]);
    run_ok(&["compact", "--config", config, "--once"]);

    let keys = table_keys(&table);
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
